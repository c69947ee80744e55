"""The README's examples run as written (examples/), against a real devnet and real servers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from eth_account.signers.local import LocalAccount

from mpp.chain.devnet import Devnet

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early ({proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("server did not start")


def test_session_roundtrip_example() -> None:
    """SES-20/27/36: the hand-driven payer + server example opens, pays and closes."""
    done = subprocess.run(
        [sys.executable, "examples/session_roundtrip.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "spent 3025 settled on chain 3025 close tx 0x" in done.stdout


def test_fastapi_example_paid_by_httpx_example(
    devnet_clean: Devnet, payer: LocalAccount, payee: LocalAccount, tmp_path: Path
) -> None:
    """CORE-29/SES-31/32: the FastAPI example answers 402, is paid by the client example, and
    its metered stream needs vouchers mid-way."""
    port = _free_port()
    env = dict(os.environ)
    env.update(
        MPP_RPC_URL=devnet_clean.rpc_url,
        MPP_ESCROW=devnet_clean.escrow,
        MPP_PAYEE_KEY="0x" + payee.key.hex(),
        MPP_PAYER_KEY="0x" + payer.key.hex(),
        MPP_SECRET="example-secret-that-is-at-least-32-bytes-long",
        MPP_STORE=str(tmp_path / "server.db"),
        API_URL=f"http://127.0.0.1:{port}",
        PYTHONPATH=str(ROOT),
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.paid_api:app", "--port", str(port),
         "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait_for_port(port, server)
        done = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "pay_api.py")],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        lines = done.stdout.splitlines()
        assert lines[0] == "{'answer': '42'}"
        assert lines[1].startswith("50 items; receipts: ")
        # 1 fixed-price request + 50 metered items, 10 and 1,000 base units each
        assert lines[1].endswith(str(1_000 + 50 * 10))
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def test_walkthrough_server_toml_serves_the_paid_chat_example(
    devnet_clean: Devnet, payer: LocalAccount, payee: LocalAccount, tmp_path: Path
) -> None:
    """docs/walkthrough.md as written: `mpp serve --config examples/server.toml` on a devnet,
    then examples/paid_chat.py pays it per token (its own client, then the openai SDK)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPP_")}
    env.update(
        MPP_RPC_URL=devnet_clean.rpc_url,
        MPP_ESCROW=devnet_clean.escrow,
        MPP_PAYEE_KEY="0x" + payee.key.hex(),
        MPP_PAYER_KEY="0x" + payer.key.hex(),
        MPP_SECRET="walkthrough-secret-that-is-at-least-32-bytes",
        MPP_BIND=f"127.0.0.1:{port}",  # the file's 8000 may be taken here
        MPP_SERVER_URL=f"http://127.0.0.1:{port}",
    )
    cmd = [sys.executable, "-m", "mpp.cli.main", "serve", "--config",
           str(ROOT / "examples" / "server.toml")]  # fmt: skip
    log = tmp_path / "serve.err"  # a file: a pipe nobody reads would fill and block the server
    with log.open("wb") as err:
        server = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                  stderr=err)  # fmt: skip
    try:
        _wait_for_port(port, server, timeout=60)
        done = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "paid_chat.py")],
            cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
            timeout=180, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        lines = done.stdout.splitlines()
        assert lines[0].startswith("model: ")
        assert "cost " in done.stdout and "balance " in done.stdout
        assert (tmp_path / "server.db").exists()  # the file's store, relative to the server
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
    logged = log.read_text()
    assert "Traceback" not in logged and payee.key.hex() not in logged
