"""`mpp serve` (a subprocess configured by a TOML file + env, stopped by SIGINT through its
handle) and `mpp chat` paying it: streamed per-token payment with mid-stream vouchers (SES-31),
a cooperative close over HTTP (SES-36/37), API-key chats, and the server's store inspected and
settled by `mpp channel` while the server runs."""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mpp.cli._paid import free_port
from mpp.cli.serve import _resolve, load_config
from tests.cli.conftest import CLI, Env

SECRET = "serve-test-secret-0123456789abcdef-0123456789"
API_KEY = "sk-cli-test"
READY_KEYS = {"url", "chainId", "escrowContract", "payee", "currency", "unitPrice",
              "suggestedDeposit", "models", "store"}  # fmt: skip
CHAT_KEYS = {"text", "model", "provider", "finishReason", "usage", "units", "unitPrice", "spent",
             "channelId", "midStreamVouchers", "balance", "receipt", "close"}  # fmt: skip
CONFIG = """
rpc_url = "{rpc}"
escrow = "{escrow}"
store = "sqlite:{store}"
bind = "127.0.0.1:{port}"
realm = "cli.test"
secret_env = "MPP_TEST_SECRET"
suggested_deposit_units = 100
api_key_envs = ["MPP_TEST_API_KEY"]

[[providers]]
kind = "embedded"
name = "local"
model = "glassllm"  # the fast test model (SmolLM2 is the default)
models = ["glassllm-en"]
input_price_per_million = 100
output_price_per_million = 200
"""


def _first_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        raise AssertionError("mpp serve printed nothing in time")
    return proc.stdout.readline()


@pytest.fixture
def served(env: Env) -> Iterator[dict[str, Any]]:
    config = env.tmp / "server.toml"
    store = env.tmp / "server.db"
    config.write_text(
        CONFIG.format(
            rpc=env.devnet.rpc_url, escrow=env.devnet.escrow, store=store, port=free_port()
        )
    )
    child_env = {**os.environ, "MPP_TEST_SECRET": SECRET, "MPP_TEST_API_KEY": API_KEY}
    for name in ("MPP_RPC_URL", "MPP_ESCROW"):  # from the TOML file this time
        child_env.pop(name)
    cmd = [sys.executable, "-m", "mpp.cli.main", "serve", "--config", str(config), "--json"]
    # stderr to a file, not a pipe nobody reads: one log line per request (vouchers included)
    # would fill a pipe and block the server.
    log = env.tmp / "serve.err"
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=child_env)
    try:
        line = _first_line(proc, 60)
        assert line, log.read_bytes()[-2000:]
        info: dict[str, Any] = json.loads(line)
        info["dsn"] = f"sqlite:{store}"
        info["process"] = proc
        info["log"] = log
        yield info
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def test_serve_then_chat_json_close_and_store(
    cli: CLI, env: Env, served: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert READY_KEYS <= set(served)
    assert served["payee"] == env.payee.address.lower() and served["unitPrice"] == "2"
    assert served["models"] == ["glassllm-en"] and served["escrowContract"] == env.devnet.escrow
    url = served["url"]

    r = cli("chat", "Tell me a story.", "--url", url, "--max-tokens", "24", "--deposit", "2000",
            "--prepay-units", "4", "--close", "--json")  # fmt: skip
    assert r.code == 0, r.err
    chat = r.json
    assert set(chat) == CHAT_KEYS
    assert chat["usage"]["completion_tokens"] == 24 and chat["unitPrice"] == "2"
    assert int(chat["spent"]) == chat["units"] * 2 > 0
    assert chat["receipt"]["cost"] == chat["spent"]  # this request's cost, from the server
    assert int(chat["balance"]) == 2000 - int(chat["spent"])  # what the channel can still pay
    assert chat["midStreamVouchers"] >= 1
    assert chat["close"]["txHash"].startswith("0x") and chat["close"]["captured"] == chat["spent"]
    first = chat["channelId"]

    human = cli("chat", "Hello there.", "--url", url, "--max-tokens", "6")
    assert human.code == 0, human.err
    assert "completion tokens; paid" in human.out and "base units)" in human.out

    listed = cli("channel", "list", "--store", served["dsn"], "--json").json["channels"]
    by_id = {row["channelId"]: row for row in listed}
    assert by_id[first]["finalized"] is True and by_id[first]["settled"] == chat["spent"]
    (second,) = [cid for cid in by_id if cid != first]
    status = cli("channel", "status", second, "--store", served["dsn"], "--json").json
    assert int(status["store"]["spent"]) > 0 and status["local"]["status"] == "open"

    settled = cli("channel", "settle", second, "--store", served["dsn"], "--json").json
    assert settled["settled"] == status["store"]["spent"]  # exactly what was delivered (SES-36)

    free = cli("chat", "Hi.", "--url", url, "--max-tokens", "3", "--api-key-env",
               "MPP_TEST_API_KEY", "--json")  # fmt: skip
    assert free.code == 2 and free.error == "MPP_TEST_API_KEY is not set"
    monkeypatch.setenv("MPP_TEST_API_KEY", API_KEY)
    free = cli("chat", "Hi.", "--url", url, "--max-tokens", "3", "--api-key-env",
               "MPP_TEST_API_KEY", "--json").json  # fmt: skip
    assert free["units"] == 0 and free["spent"] == "0" and free["channelId"] is None

    # A channel opened with `mpp channel open` is reused by `mpp chat` (SES-04): vouchers only.
    # The payee closes `second` first so that the new channel is the only open one.
    closed = cli("channel", "close", second, "--store", served["dsn"], "--json")
    assert closed.code == 0, closed.err
    opened = cli("channel", "open", "--payee", served["payee"], "--deposit", "3000", "--json").json
    again = cli("chat", "Hi.", "--url", url, "--max-tokens", "4", "--json").json
    assert again["channelId"] == opened["channelId"] and int(again["spent"]) > 0

    proc: subprocess.Popen[bytes] = served["process"]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(20) == 130  # Ctrl-C, after the same clean shutdown as SIGTERM's 0
    assert proc.stdout is not None
    printed = served["log"].read_bytes() + proc.stdout.read()
    assert b"Traceback" not in printed
    assert all(secret.encode() not in printed for secret in env.secrets)


def test_serve_human_ready_line(env: Env, tmp_path: Path) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "mpp.cli.main", "serve", "--bind", f"127.0.0.1:{port}",
           "--store", f"sqlite:{tmp_path / 's.db'}"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
    try:
        line = _first_line(proc, 60).decode()
        assert line.startswith(f"Serving paid inference on http://127.0.0.1:{port}/v1")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 130
    assert proc.stderr is not None
    assert b"MPP_SECRET is unset" in proc.stderr.read()  # the one-line note


def test_settings_precedence_flags_env_toml(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('bind = "127.0.0.1:1"\nstore = "sqlite:toml.db"\nrpc_url = "http://toml"\n')
    monkeypatch.setenv("MPP_STORE", "sqlite:env.db")
    args = argparse.Namespace(
        rpc_url=None, chain_id=None, escrow=None, store=None, bind="127.0.0.1:2", token=None,
        key_env=None, keystore=None, password_env=None,
    )  # fmt: skip
    ns = _resolve(args, load_config(config))
    assert ns.bind == "127.0.0.1:2"  # flag over TOML
    assert ns.store == "sqlite:env.db"  # env over TOML
    assert ns.rpc_url == env.devnet.rpc_url  # env (MPP_RPC_URL) over TOML
    assert ns.key_env == "MPP_PAYEE_KEY" and ns.password_env == "MPP_KEYSTORE_PASSWORD"


def test_bad_config_is_usage_error(cli: CLI, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('bnid = "127.0.0.1:1"\n')
    r = cli("serve", "--config", str(config))
    assert r.code == 2 and r.error == f"unknown setting(s) in {config}: bnid"
    config.write_text("bind = \n")
    assert cli("serve", "--config", str(config)).error.startswith(f"bad TOML in {config}")


def test_charge_per_request_config_key() -> None:
    """`charge_per_request` in the TOML: base units or a `usd` amount; zero or junk is refused."""
    from mpp.cli._common import CliError
    from mpp.cli.serve import _charge_per_request

    assert _charge_per_request({}) is None
    assert _charge_per_request({"charge_per_request": "0.01usd"}) == 10_000
    assert _charge_per_request({"charge_per_request": 2500}) == 2_500
    for bad in ("0", "-1", "\uff11", "lots"):
        with pytest.raises(CliError):
            _charge_per_request({"charge_per_request": bad})


def _chat_process(url: str, *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "mpp.cli.main", "chat", "--url", url, "--max-tokens", "6",
           "--deposit", "2000", *extra]  # fmt: skip
    return subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_chat_repl_multi_turn_cost_balance_and_ctrl_c(env: Env, served: dict[str, Any]) -> None:
    """Without a prompt `mpp chat` is a REPL: the model comes from the server's list, each
    turn shows its cost and the balance, the history goes with every turn, Ctrl-D ends (0)
    and Ctrl-C at the prompt ends with 130."""
    proc = _chat_process(served["url"])
    try:
        out, err = proc.communicate("Hello there.\nAnd then?\n/reset\nHi.\n", timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, err
    assert "Chatting with glassllm-en" in out
    assert out.count("completion tokens; paid") == 3 and out.count("; balance ") == 3
    assert "(history cleared)" in out and "(this chat so far:" in out
    assert "Traceback" not in err
    assert all(secret not in out + err for secret in env.secrets)
    # The second turn sent the first question and answer too: its prompt is the longest.
    prompts = [int(line.split("[", 1)[1].split(" ")[0])
               for line in out.splitlines() if "completion tokens; paid" in line]  # fmt: skip
    assert prompts[1] > prompts[0] and prompts[2] < prompts[1]

    proc = _chat_process(served["url"])
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("Chatting with")
        proc.send_signal(signal.SIGINT)  # at the prompt
        assert proc.wait(30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_chat_repl_ctrl_c_stops_an_answer_and_the_chat_goes_on(
    env: Env, served: dict[str, Any]
) -> None:
    """Ctrl-C during an answer stops that answer (the response is closed: only what arrived is
    paid) and the REPL asks again; the next turn works on the same channel."""
    proc = _chat_process(served["url"], "--max-tokens", "1500", "--deposit", "8000")
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().startswith("Chatting with")
        proc.stdin.write("Tell me a very long story.\n")
        proc.stdin.flush()
        seen = ""
        while len(seen) < 40:  # the answer is streaming (1,500 tokens take seconds)
            chunk = os.read(proc.stdout.fileno(), 256).decode(errors="replace")
            assert chunk, "mpp chat ended early"
            seen += chunk
        proc.send_signal(signal.SIGINT)
        while "(stopped: only the tokens received are paid)" not in seen:
            chunk = os.read(proc.stdout.fileno(), 4096).decode(errors="replace")
            assert chunk, seen[-500:]
            seen += chunk
        out, err = proc.communicate("Hi.\n/exit\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, err
    assert "completion tokens; paid" in out  # the next turn was answered and paid
    assert "Traceback" not in err
