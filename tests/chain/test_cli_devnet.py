"""`mpp devnet --json` as a subprocess: machine-readable output, SIGINT stops it and its anvil."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from mpp.chain.devnet import DevnetError, find_anvil
from mpp.chain.web3chain import PATH_USD, Web3Chain


def _rpc_alive(url: str) -> bool:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
    request = urllib.request.Request(url, body.encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=1) as response:
            return bool(json.loads(response.read()).get("result"))
    except (OSError, urllib.error.URLError):
        return False


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        raise AssertionError("mpp devnet printed nothing in time")
    return proc.stdout.readline()


def test_cli_devnet_json_then_sigint() -> None:
    try:
        find_anvil()
    except DevnetError as exc:
        pytest.skip(str(exc))
    cmd = [sys.executable, "-m", "mpp.cli.main", "devnet", "--json", "--accounts", "2",
           "--amount", "5000000"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        info = json.loads(_read_line(proc, 30))
        assert info["chainId"] == 31337 and info["currency"] == PATH_USD
        assert len(info["accounts"]) == 2
        assert all("privateKey" not in a for a in info["accounts"])  # keys only with --show-keys
        chain = Web3Chain(info["rpcUrl"])
        assert chain.close_grace_period(info["escrowContract"]) == 900
        assert chain.balance_of(PATH_USD, info["accounts"][0]["address"]) == 5_000_000
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 130  # Ctrl-C: the documented exit code (SIGTERM: 0)
        assert not _rpc_alive(info["rpcUrl"])  # anvil is gone too
        assert proc.stderr is not None and proc.stderr.read() == b""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_cli_devnet_error_is_one_line(tmp_path: object) -> None:
    env = {**os.environ, "MPP_ANVIL": "/nonexistent/anvil"}
    proc = subprocess.run(
        [sys.executable, "-m", "mpp.cli.main", "devnet", "--json"],
        capture_output=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mpp: error:") and "MPP_ANVIL" in lines[0]
    assert b"Traceback" not in proc.stderr
