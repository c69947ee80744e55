"""`mpp serve` as a child process with a handle: start, SIGTERM, SIGKILL, restart on the same
store. Every start is bounded, and `close()` stops the process (terminate, then kill), also when
a test fails."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from mpp.cli._paid import free_port

SECRET = "serve-money-secret-0123456789abcdef-0123456789"

CONFIG = """
rpc_url = "{rpc}"
escrow = "{escrow}"
store = "sqlite:{store}"
bind = "127.0.0.1:{port}"
realm = "money.test"
secret_env = "MPP_TEST_SECRET"
suggested_deposit_units = {deposit_units}

[settlement]
{settlement}

[[providers]]
kind = "embedded"
name = "local"
model = "glassllm"  # the fast test model (SmolLM2 is the default)
models = ["glassllm-en"]
input_price_per_million = 100
output_price_per_million = 200
token_delay = {token_delay}
"""


class MppServe:
    """One `mpp serve --json` process; `info` is its ready line."""

    def __init__(
        self,
        tmp: Path,
        *,
        rpc_url: str,
        escrow: str,
        payee_key: str,
        settlement: str = "poll_interval = 0.2",
        token_delay: float = 0.0,
        deposit_units: int = 1000,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.store = tmp / "server.db"
        self.port = free_port()
        self.config = tmp / "server.toml"
        self.rpc_url = rpc_url
        self.config.write_text(
            CONFIG.format(
                rpc=rpc_url, escrow=escrow, store=self.store, port=self.port,
                settlement=settlement, token_delay=token_delay, deposit_units=deposit_units,
            )
        )  # fmt: skip
        self.env = {
            **os.environ,
            "MPP_TEST_SECRET": SECRET,
            "MPP_PAYEE_KEY": payee_key,
            "PYTHONUNBUFFERED": "1",
        }
        for name in ("MPP_RPC_URL", "MPP_ESCROW", "MPP_STORE", "MPP_CONFIG"):
            self.env.pop(name, None)
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        self._err = tempfile.TemporaryFile()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dsn(self) -> str:
        return f"sqlite:{self.store}"

    def start(self, timeout: float = 60.0) -> MppServe:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        cmd = [sys.executable, "-m", "mpp.cli.main", "serve", "--config", str(self.config),
               "--json", *self.extra_args]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self._err, stdin=subprocess.DEVNULL, env=self.env
        )
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            self.close()
            raise AssertionError(f"mpp serve printed nothing in time: {self.stderr()}")
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"mpp serve exited: {self.stderr()}")
        self.info = json.loads(line)
        return self

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait: the graceful shutdown path."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def stderr(self) -> str:
        self._err.flush()
        self._err.seek(0)
        return str(self._err.read()[-4000:].decode(errors="replace"))

    def __enter__(self) -> MppServe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        self._err.close()
