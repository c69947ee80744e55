"""Bad inputs give one readable line and the documented exit code, never a traceback (unless
--debug): 1 failed, 2 usage / bad input, 3 chain unreachable or wrong chain. Keys come from an
env var or a keystore and never appear in any output (checked by the `cli` fixture)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account

import mpp.cli.channel
from mpp.chain.devnet import _free_port
from tests.cli.conftest import CLI, Env
from tests.cli.test_channel import open_channel

UNKNOWN = "0x" + "ab" * 32


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["channel", "open", "--payee", "0x123", "--deposit", "1"], 2,
         "bad address for --payee: '0x123'"),
        (["channel", "open", "--payee", "0x" + "11" * 20, "--deposit", "1.5"], 2,
         "bad amount for --deposit: '1.5' (base units like 1500000, or 1.5usd)"),
        (["channel", "status", "0x1234"], 2,
         "bad channel id '0x1234' (expected 0x + 64 hex digits)"),
        (["channel", "status", UNKNOWN], 2, f"unknown channel {UNKNOWN} on escrow"),
        (["channel", "topup", UNKNOWN, "10"], 2, f"unknown channel {UNKNOWN} on escrow"),
        (["channel", "open", "--payee", "0x" + "11" * 20, "--deposit", "1000000usd"], 1,
         "insufficient balance: "),
        (["channel", "status", UNKNOWN, "--chain-id", "4217"], 3,
         "wrong chain: http://127.0.0.1:"),
        (["channel", "status", UNKNOWN, "--escrow", "0x" + "00" * 19 + "01"], 2,
         "no contract at escrow address 0x0000000000000000000000000000000000000001"),
        (["channel", "settle", UNKNOWN, "--amount", "1"], 2,
         "--amount and --signature go together"),
        (["channel", "settle", UNKNOWN], 2, "give either --store DSN or --amount and --signature"),
        (["channel", "list", "--store", "mysql://x"], 2, "bad store DSN: unsupported store DSN"),
        (["serve", "--bind", "nowhere"], 2, "bad bind address 'nowhere' (host:port expected)"),
        (["chat", "hi", "--url", "http://example.com", "--json"], 2, "payment requires https"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line(cli: CLI, argv: list[str], code: int, message: str) -> None:
    r = cli(*argv)
    assert r.code == code, r.err
    assert r.error.startswith(message), r.error
    if "--json" in argv:  # the same error as one JSON object on stdout
        assert r.json == {"error": r.error, "exitCode": code}
    else:
        assert r.out == ""


def test_rpc_unreachable_is_3(cli: CLI) -> None:
    url = f"http://127.0.0.1:{_free_port()}/secret-api-key"
    r = cli("channel", "status", UNKNOWN, "--rpc-url", url)
    assert r.code == 3
    assert r.error == f"RPC endpoint unreachable: {url.rsplit('/', 1)[0]}"  # path redacted


def test_missing_and_malformed_keys(cli: CLI, env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ("channel", "open", "--payee", env.payee.address, "--deposit", "10")
    monkeypatch.delenv("MPP_PAYER_KEY")
    assert cli(*args).error == "no key: set MPP_PAYER_KEY or give --keystore"
    monkeypatch.setenv("MPP_PAYER_KEY", "0xnot-a-key-but-a-secret")
    r = cli(*args)
    assert r.code == 2
    assert r.error == "MPP_PAYER_KEY does not hold a usable private key: private key is not hex"
    assert "not-a-key" not in r.err
    monkeypatch.setenv("MPP_PAYER_KEY", "0x" + "00" * 32)  # hex, 32 bytes, but not a key
    assert cli(*args).error.endswith("private key is zero or not below the secp256k1 group order")
    monkeypatch.delenv("MPP_RPC_URL")
    assert cli("channel", "status", UNKNOWN).error.startswith("no RPC URL")


def test_keystore_with_password_env(
    cli: CLI, env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keystore = tmp_path / "payer.json"
    keystore.write_text(json.dumps(Account.encrypt(bytes(env.payer.key), "pw-123", iterations=2)))
    monkeypatch.delenv("MPP_PAYER_KEY")
    monkeypatch.setenv("MPP_KEYSTORE_PASSWORD", "pw-123")
    args = ("channel", "open", "--payee", env.payee.address, "--deposit", "10", "--json")
    opened = cli(*args, "--keystore", str(keystore)).json
    assert opened["payer"] == env.payer.address.lower()
    monkeypatch.setenv("MPP_KEYSTORE_PASSWORD", "wrong")
    r = cli(*args, "--keystore", str(keystore))
    assert r.code == 2 and r.error == f"cannot decrypt keystore {keystore} (wrong password?)"
    monkeypatch.delenv("MPP_KEYSTORE_PASSWORD")
    r = cli(*args, "--keystore", str(keystore))  # stdin is not a TTY under pytest: no prompt
    assert r.code == 2 and r.error.startswith("no keystore password: set MPP_KEYSTORE_PASSWORD")


def test_role_checks(cli: CLI, env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    cid = open_channel(cli, env)["channelId"]
    monkeypatch.setenv("MPP_PAYEE_KEY", os.environ["MPP_PAYER_KEY"])
    r = cli("channel", "close", cid)
    assert r.code == 2 and r.error.startswith(f"this key is not the payee of channel {cid}")
    missing = env.tmp / "s.db"
    assert cli("channel", "settle", cid, "--store", f"sqlite:{missing}").error == (
        f"no store at {missing} (mpp serve creates it on its first start)"
    )
    assert not missing.exists()  # a typo in --store leaves no empty database behind
    from mpp.store.sqlite import SqliteStore

    SqliteStore(str(missing)).close()  # an (empty) store of ours
    assert cli("channel", "settle", cid, "--store", f"sqlite:{missing}").error == (
        f"unknown channel {cid} in the store"
    )


def test_debug_shows_the_traceback(cli: CLI) -> None:
    r = cli("channel", "status", UNKNOWN, "--debug")
    assert r.code == 2 and "Traceback" in r.err
    assert r.err.strip().splitlines()[-1].startswith("mpp: error: unknown channel")


def test_unexpected_errors_stay_one_line(cli: CLI, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kw: object) -> None:
        raise TypeError("unexpected")

    monkeypatch.setattr(mpp.cli.channel, "_payer_chain", boom)
    r = cli("channel", "topup", UNKNOWN, "5")
    assert r.code == 1
    assert r.error == "internal error (TypeError: unexpected); rerun with --debug for details"


def test_usage_errors_are_2(cli: CLI) -> None:
    assert cli("channel").code == 2
    assert cli("channel", "open", "--deposit", "1").code == 2  # --payee is required
    assert cli().code == 2  # no command: help on stderr


def test_console_script_error_and_help(env: Env) -> None:
    """The installed `mpp` entry point: one stderr line, exit 2, no traceback; help lists codes."""
    mpp = Path(sys.executable).parent / "mpp"
    proc = subprocess.run(
        [str(mpp), "channel", "status", "0xnope"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr == "mpp: error: bad channel id '0xnope' (expected 0x + 64 hex digits)\n"
    helped = subprocess.run([str(mpp), "--help"], capture_output=True, text=True, timeout=60)
    assert "exit codes: 0 ok, 1 the operation failed, 2 usage or bad input" in helped.stdout
    for command in ("devnet", "deploy", "channel", "serve", "chat", "demo"):
        assert command in helped.stdout


def test_every_command_module_is_listed_and_help_loads_no_command() -> None:
    """`mpp --help`/`--version` import no command module (so neither web3 nor the model): the
    commands are listed by name, and each listed module registers its command."""
    import pkgutil
    import subprocess
    import sys

    import mpp.cli
    from mpp.cli.main import COMMANDS

    modules = {m.name for m in pkgutil.iter_modules(mpp.cli.__path__)}
    commands = {name for name in modules if not name.startswith("_") and name != "main"}
    assert set(COMMANDS) == commands
    probe = (
        "import sys, contextlib, io\n"
        "from mpp.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: main(['--help'])\n"
        "    except SystemExit: pass\n"
        "print(sorted(m for m in sys.modules if m.startswith(('web3', 'mpp.cli.'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['mpp.cli.main']"


def test_json_errors_are_a_json_object_on_stdout(
    cli: CLI, env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MPP_RPC_URL")
    r = cli("channel", "status", UNKNOWN, "--json")
    assert r.code == 2
    assert r.json == {"error": r.error, "exitCode": 2}
