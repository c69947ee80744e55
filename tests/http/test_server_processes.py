"""Several server processes on one store (real uvicorn processes, real anvil, real stores).

CORE-47 / SES-29: the same Idempotency-Key sent concurrently to two processes sharing one
SQLite file or one PostgreSQL database → exactly one handler run and one charge; the loser gets
409 + Retry-After, a later duplicate gets the stored response. SES-31 / SES-34: a stream paused
in process A resumes when its voucher is accepted by process B (PostgreSQL LISTEN/NOTIFY).

Also the server process itself: `python -m tests.http.test_server_processes '<json config>'`.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from mpp.core.challenge import Challenge, parse_challenges
from mpp.core.credential import Credential
from mpp.http import (
    RECEIPTS_KEY,
    PaymentAuth,
    PaymentGate,
    PaymentMiddleware,
    Price,
    Route,
    get_meter,
)
from mpp.session.voucher import sign_voucher
from mpp.store.open import open_store
from tests.http.support import PER_TOKEN, SECRET, TOKEN, Env, free_port

ROOT = Path(__file__).resolve().parents[2]
SLOW = Price(amount=1_000, description="a slow answer")


# --- the server (also run in child processes) ---------------------------------------------------


def build_app(config: dict[str, Any]) -> Any:
    """/slow (fixed price, sleeps `delay`, logs each run), /flaky (500 on its first run),
    /stream (metered SSE, `?n=` units)."""
    from eth_account import Account

    from mpp.chain.web3chain import Web3Chain
    from mpp.core.binding import ChallengeIssuer
    from mpp.session.engine import SessionServer
    from mpp.session.terms import SessionTerms

    payee = str(Account.from_key(config["payee_key"]).address).lower()
    terms = SessionTerms(
        amount=1,
        currency=TOKEN,
        recipient=payee,
        escrow_contract=config["escrow"],
        chain_id=int(config["chain_id"]),
        suggested_deposit=50_000,
    )
    chain = Web3Chain(
        config["rpc_url"], account=config["payee_key"], fee_token=TOKEN, chain_id=terms.chain_id
    )
    engine = SessionServer(open_store(config["dsn"]), chain, terms)
    issuer = ChallengeIssuer(SECRET, realm="test.local", clock=lambda: datetime.now(UTC))
    routes = [Route("/slow", SLOW), Route("/flaky", SLOW), Route("/stream", PER_TOKEN)]
    gate = PaymentGate(engine, issuer, routes)
    runs = Path(config["runs"])
    delay = float(config.get("delay", 1.5))

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        with runs.open("a") as f:
            f.write(f"{path} {os.getpid()}\n")
        if path == "/stream":
            await _stream(scope, send)
            return
        status = 200
        if path == "/slow":
            await asyncio.sleep(delay)
        elif path == "/flaky" and _count(runs, "/flaky") == 1:
            status = 500
        body = json.dumps({"path": path, "pid": os.getpid(), "at": time.time()}).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    timeout = float(config.get("voucher_timeout", 30.0))
    return PaymentMiddleware(app, gate, voucher_timeout=timeout)


async def _stream(scope: dict[str, Any], send: Any) -> None:
    query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
    meter = get_meter(scope)
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for i in range(int(query.get("n", "5"))):
        if not await meter.charge(1):
            break
        chunk = f"data: {json.dumps({'i': i})}\n\n".encode()
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def _count(runs: Path, path: str) -> int:
    return sum(1 for line in runs.read_text().splitlines() if line.split()[0] == path)


def main(argv: list[str]) -> None:
    import uvicorn

    config = json.loads(argv[0])
    uvicorn.run(
        build_app(config),
        host="127.0.0.1",
        port=int(config["port"]),
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=2,
    )


# --- process handles ----------------------------------------------------------------------------


class ServerProcess:
    """One server child process; `stop()` terminates it through its own handle."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = {**config, "port": free_port()}
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.http.test_server_processes", json.dumps(self.config)],
            cwd=str(ROOT),
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.config['port']}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.tail()}")
            try:
                if httpx.head(self.url + "/slow", timeout=1.0).status_code == 402:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not come up: {self.tail()}")

    def tail(self) -> str:
        self.log.seek(0)
        return str(self.log.read()[-3000:].decode(errors="replace"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def server_config(env: Env, dsn: str, **config: Any) -> dict[str, Any]:
    (env.tmp / "runs.log").touch()
    return {
        "rpc_url": env.devnet.rpc_url,
        "chain_id": env.devnet.chain_id,
        "escrow": env.devnet.escrow,
        "payee_key": env.payee_key,
        "dsn": dsn,
        "runs": str(env.tmp / "runs.log"),
        **config,
    }


def start_processes(
    env: Env, dsn: str, stack: ExitStack, **config: Any
) -> tuple[ServerProcess, ServerProcess]:
    base = server_config(env, dsn, **config)
    a, b = ServerProcess(base), ServerProcess(base)
    stack.callback(a.stop)
    stack.callback(b.stop)
    a.wait_ready()
    b.wait_ready()
    return a, b


class Cluster:
    """Servers on one store (`url` first) and a payer with one channel opened through it."""

    def __init__(self, env: Env, dsn: str, url: str) -> None:
        self.env, self.dsn = env, dsn
        self.runs = env.tmp / "runs.log"
        self.payer = env.payer_for()
        auth = PaymentAuth(self.payer, allow_insecure=True, deposit=20_000, prepay_units=1)
        with httpx.Client(auth=auth, timeout=30) as client:
            r = client.get(url + "/stream?n=1")  # opens the channel
        assert r.status_code == 200
        self.cid = str(r.extensions[RECEIPTS_KEY][-1]["channelId"])

    def state(self) -> Any:
        store = open_store(self.dsn)
        try:
            return store.get(self.cid)
        finally:
            store.close()

    def runs_of(self, path: str) -> int:
        return _count(self.runs, path)

    def challenge(self, url: str, method: str = "GET", **kw: Any) -> Challenge:
        r = httpx.request(method, url, **kw)
        assert r.status_code == 402
        return parse_challenges(r.headers.get_list("www-authenticate"))[0]

    def credential(self, challenge: Challenge, cum: int) -> str:
        sig = sign_voucher(
            self.env.payer_key,
            self.cid,
            cum,
            chain_id=self.env.devnet.chain_id,
            escrow=self.env.devnet.escrow,
        )
        payload = {
            "action": "voucher",
            "channelId": self.cid,
            "cumulativeAmount": str(cum),
            "signature": sig,
        }
        return Credential(challenge, payload).to_header()


@pytest.fixture(params=["sqlite", "postgres"])
def shared_dsn(request: pytest.FixtureRequest, env: Env) -> str:
    if request.param == "sqlite":
        return f"sqlite://{env.tmp / 'shared.db'}"
    dsn: str = request.getfixturevalue("pg_fresh_dsn")
    return dsn


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


# --- CORE-47 / SES-29 across processes ---------------------------------------------------------


def test_core_47_ses_29_same_key_in_two_processes_runs_and_charges_once(
    env: Env, shared_dsn: str, stack: ExitStack
) -> None:
    a, b = start_processes(env, shared_dsn, stack, delay=2.0)
    c = Cluster(env, shared_dsn, a.url)
    before = c.state()
    body = b'{"q": 1}'
    cred = c.credential(c.challenge(a.url + "/slow", "POST", content=body), 15_000)
    headers = {"Authorization": cred, "Idempotency-Key": "dup-1"}
    go = threading.Barrier(2)
    answers: dict[str, httpx.Response] = {}

    def send(name: str, url: str) -> None:
        go.wait()
        answers[name] = httpx.post(url + "/slow", content=body, headers=headers, timeout=30)

    threads = [threading.Thread(target=send, args=(n, s.url)) for n, s in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    statuses = sorted(r.status_code for r in answers.values())
    assert statuses == [200, 409], {n: (r.status_code, r.text) for n, r in answers.items()}
    ok = next(r for r in answers.values() if r.status_code == 200)
    busy = next(r for r in answers.values() if r.status_code == 409)
    assert busy.headers["content-type"] == "application/problem+json"
    assert int(busy.headers["retry-after"]) >= 1 and "payment-receipt" not in busy.headers
    # Later duplicates, to either process: the stored response, no run, no charge.
    for server in (a, b):
        again = httpx.post(server.url + "/slow", content=body, headers=headers, timeout=30)
        assert again.status_code == 200 and again.content == ok.content
        assert again.headers["payment-receipt"] == ok.headers["payment-receipt"]
    assert c.runs_of("/slow") == 1
    after = c.state()
    assert after.spent - before.spent == SLOW.amount


# --- SES-31 / SES-34: cross-process wake-up (PostgreSQL LISTEN/NOTIFY) ------------------------


def test_ses_31_34_stream_paused_in_a_resumes_on_voucher_sent_to_b(
    env: Env, pg_fresh_dsn: str, stack: ExitStack
) -> None:
    a, b = start_processes(env, pg_fresh_dsn, stack, voucher_timeout=30.0)
    c = Cluster(env, pg_fresh_dsn, a.url)
    st = c.state()
    n = st.available // PER_TOKEN.amount + 3  # runs dry 3 units before the end
    cred = c.credential(c.challenge(a.url + "/stream"), st.accepted_cumulative)
    events: list[str] = []
    paused = threading.Event()
    done: dict[str, float] = {}

    def read() -> None:
        with httpx.stream(
            "GET", f"{a.url}/stream?n={n}", headers={"Authorization": cred}, timeout=60
        ) as r:
            for event in r.iter_text():
                events.append(event)
                if "payment-need-voucher" in event:
                    paused.set()
        done["at"] = time.monotonic()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert paused.wait(30), "".join(events)
        need = json.loads(
            "".join(events).split("event: payment-need-voucher\ndata: ")[1].split("\n")[0]
        )
        sent = time.monotonic()
        head = httpx.head(
            b.url + "/stream",
            headers={
                "Authorization": c.credential(
                    c.challenge(b.url + "/stream"), int(need["requiredCumulative"]) + 20
                )
            },
            timeout=30,
        )
        assert head.status_code == 200  # accepted by B (SES-34: any connection, HEAD)
    finally:
        reader.join(60)
    text = "".join(events)
    assert text.count('data: {"i"') == n  # resumed and finished in A
    assert "event: payment-receipt" in text.rsplit("payment-need-voucher", 1)[1]
    assert done["at"] - sent < 10  # woken by B's NOTIFY, not by the 30 s timeout


if __name__ == "__main__":
    main(sys.argv[1:])
