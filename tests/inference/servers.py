"""Real servers on loopback for the inference tests: our app under uvicorn in a thread, and an
upstream that is a second process running `python -m mpp.inference.serve` (stopped by its
handle)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from eth_account.signers.local import LocalAccount

from mpp.chain.devnet import Devnet, DevnetError
from mpp.core.binding import ChallengeIssuer
from mpp.http.server.asgi import ASGIApp
from mpp.session.engine import SessionServer
from mpp.session.payer import Payer
from mpp.session.policy import SpendingPolicy
from mpp.session.ports import Store
from mpp.session.terms import SessionTerms

MODEL = "glassllm-en"
UPSTREAM_KEY = "upstream-test-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_app(app: ASGIApp) -> Iterator[str]:
    """Run `app` under uvicorn on a loopback port in a thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@dataclass
class Upstream:
    process: subprocess.Popen[bytes]
    url: str  # the OpenAI base URL (…/v1)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@contextmanager
def upstream_process(providers: list[Mapping[str, Any]]) -> Iterator[Upstream]:
    """Our own server with embedded providers, in a second process, behind an API key."""
    port = free_port()
    config = {"api_key_envs": ["MPP_UPSTREAM_KEY"], "providers": providers}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(config, f)
    env = {**os.environ, "MPP_UPSTREAM_KEY": UPSTREAM_KEY}
    cmd = [sys.executable, "-m", "mpp.inference.serve", "--config", f.name, "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    up = Upstream(proc, f"http://127.0.0.1:{port}/v1")
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"upstream exited: {proc.stderr.read() if proc.stderr else ''!r}"
                )
            try:
                if httpx.get(f"{up.url}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("upstream did not start")
            time.sleep(0.05)
        yield up
    finally:
        up.kill()
        os.unlink(f.name)


def chat_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Tell me a story."}],
        "max_tokens": 8,
    }
    body.update(overrides)
    return body


def sse_data(text: str) -> list[Any]:
    """The `data:` payloads of an SSE body, JSON-decoded ("[DONE]" kept as a string)."""
    out: list[Any] = []
    for block in text.split("\n\n"):
        lines = [ln[5:].strip() for ln in block.splitlines() if ln.startswith("data:")]
        if not lines:
            continue
        data = "\n".join(lines)
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


TOKEN = "0x20c0000000000000000000000000000000000000"  # pathUSD on the devnet


def session_engine(
    devnet: Devnet, payee: LocalAccount, store: Store, *, unit_price: int = 2
) -> SessionServer:
    """The payee's session engine on `devnet`, pricing one unit at `unit_price` base units."""
    terms = SessionTerms(
        amount=unit_price,
        currency=TOKEN,
        recipient=payee.address,
        escrow_contract=devnet.escrow,
        chain_id=devnet.chain_id,
    )
    chain = devnet.chain("0x" + bytes(payee.key).hex(), fee_token=TOKEN)
    return SessionServer(store, chain, terms)


def issuer_for(realm: str) -> ChallengeIssuer:
    return ChallengeIssuer(f"{realm}-test-secret".encode() * 4, realm=realm,
                           clock=lambda: datetime.now(UTC))  # fmt: skip


def devnet_payer(devnet: Devnet, records: Path, *, max_price: int = 10) -> Payer:
    """A fresh funded payer on `devnet` with its records at `records`."""
    (account,) = devnet.new_accounts(1)
    return Payer(
        "0x" + bytes(account.key).hex(),
        records_path=records,
        chain=devnet.chain(),
        policy=SpendingPolicy(max_amount_per_unit=max_price, max_deposit=10**9),
    )


@contextmanager
def devnet_or_skip() -> Iterator[Devnet]:
    """A fresh devnet for a module's server, stopped by its handle (the test skips, saying why,
    where anvil cannot start)."""
    try:
        devnet = Devnet.start()
    except DevnetError as exc:
        pytest.skip(str(exc))
    try:
        yield devnet
    finally:
        devnet.stop()
