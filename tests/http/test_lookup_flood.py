"""Vouchers naming channels nobody opened cost a chain RPC each; they take the bounded lookup
lane (mpp.http.server.lanes), so a paying stream never waits behind them (SES-42 as decided).

Real uvicorn and anvil; the server's RPC goes through a 40 ms delay proxy (a slow provider).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest

from mpp.chain.web3chain import Web3Chain
from mpp.core.challenge import Challenge, parse_challenges
from mpp.core.credential import Credential
from mpp.http import RECEIPTS_KEY, PaymentAuth, PaymentGate, PaymentMiddleware, Route
from mpp.http.server.lanes import LOOKUP_CONCURRENCY
from mpp.session.engine import SessionServer
from mpp.session.voucher import sign_voucher
from mpp.store.sqlite import SqliteStore
from tests.delay_proxy import DelayProxy
from tests.http.support import (
    FIXED,
    PER_TOKEN,
    TOKEN,
    Counters,
    Env,
    ServerThread,
    api_key_ok,
    final_receipt,
    plain_app,
)

RPC_RTT = 0.04


class CountingChain:
    """The engine's chain adapter, counting `read_channel` calls (one per unknown id). With
    `stuck` set, a read of an id in `strangers` hangs until `release` is set: an RPC as slow
    as it gets, deterministic; `peak` is the most such reads in progress at once."""

    def __init__(self, inner: Web3Chain, stuck: bool = False) -> None:
        self.inner = inner
        self.reads = 0
        self.stuck = stuck
        self.strangers: set[str] = set()
        self.release = threading.Event()
        self.peak = 0
        self._now = 0
        self._lock = threading.Lock()

    def read_channel(self, escrow: str, channel_id: str) -> Any:
        with self._lock:
            self.reads += 1
        if self.stuck and channel_id.lower() in self.strangers:
            with self._lock:
                self._now += 1
                self.peak = max(self.peak, self._now)
            try:
                self.release.wait(60)
            finally:
                with self._lock:
                    self._now -= 1
        return self.inner.read_channel(escrow, channel_id)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)


@pytest.fixture
def slow_rpc(env: Env) -> Iterator[str]:
    port = int(env.devnet.rpc_url.rsplit(":", 1)[1].split("/")[0])
    with DelayProxy(port, RPC_RTT) as proxy:
        yield proxy.url


def _server(
    env: Env, rpc: str, stuck: bool = False, **gate: Any
) -> tuple[ServerThread, CountingChain]:
    web3 = Web3Chain(rpc, account=env.payee_key, fee_token=TOKEN, chain_id=env.devnet.chain_id)
    chain = CountingChain(web3, stuck)
    engine = SessionServer(SqliteStore(str(env.tmp / "server.db")), cast(Any, chain), env.terms())
    routes = [Route("/fixed", FIXED), Route("/stream", PER_TOKEN)]
    app = plain_app(
        PaymentGate(engine, env.issuer(), routes, authorize=api_key_ok, **gate), Counters()
    )
    return ServerThread(app).start(), chain


def _stranger_voucher(env: Env, challenge: Challenge, chain: CountingChain) -> str:
    cid = "0x" + secrets.token_hex(32)  # an id nobody opened: the server must ask the chain
    chain.strangers.add(cid)
    sig = sign_voucher(
        "0x" + os.urandom(32).hex(),
        cid,
        1_000,
        chain_id=env.devnet.chain_id,
        escrow=env.devnet.escrow,
    )
    payload = {"action": "voucher", "channelId": cid, "cumulativeAmount": "1000", "signature": sig}
    return Credential(challenge, payload).to_header()


def _challenge(url: str) -> Challenge:
    r = httpx.get(url + "/fixed")
    assert r.status_code == 402
    return parse_challenges(r.headers.get_list("www-authenticate"))[0]


async def test_ses_42_unknown_channel_flood_leaves_a_paying_stream_unaffected(
    env: Env, slow_rpc: str
) -> None:
    # Strangers' ids hang in the chain until released; no per-peer failure limit (the flood
    # stands for many strangers). Behind one such lookup, any voucher would wait forever.
    server, chain = _server(env, slow_rpc, stuck=True, failure_rate=None)
    try:
        mw = cast(PaymentMiddleware, server.server.config.app)
        auth = PaymentAuth(env.payer_for(), allow_insecure=True, deposit=10_000)
        ch = _challenge(server.url)
        async with httpx.AsyncClient(auth=auth, timeout=30) as client:
            async with client.stream("GET", server.url + "/stream?n=10&rate=100") as r:
                assert r.status_code == 200  # the channel is open and known
                await r.aread()
            done = asyncio.Event()

            async def stream() -> dict[str, Any]:
                try:
                    async with client.stream("GET", server.url + "/stream?n=300&rate=100") as r:
                        body = await r.aread()
                        assert len([e for e in body.split(b"\n\n") if e]) == 300
                        return final_receipt(r.extensions[RECEIPTS_KEY])
                finally:
                    done.set()
                    chain.release.set()  # the stuck lookups answer now

            async def flood(sender: httpx.AsyncClient) -> list[int]:
                codes = []
                while not done.is_set():
                    header = _stranger_voucher(env, ch, chain)
                    r = await sender.head(server.url + "/fixed", headers={"Authorization": header})
                    codes.append(r.status_code)
                    if r.status_code == 503:
                        await asyncio.sleep(0.05)  # the lane is full: as Retry-After says
                return codes

            limits = httpx.Limits(max_connections=200)
            async with httpx.AsyncClient(timeout=90, limits=limits) as sender:
                # 80 strangers at once: the lookup lane runs 4, queues 64, refuses the rest.
                final, *floods = await asyncio.gather(stream(), *(flood(sender) for _ in range(80)))
        codes = [c for f in floods for c in f]
        assert final["units"] == 300 and final["spent"] == "3100"
        assert set(codes) <= {410, 503}, sorted(set(codes))  # not found, or the lane is full
        assert 503 in codes and codes.count(410) >= LOOKUP_CONCURRENCY
        assert chain.peak == LOOKUP_CONCURRENCY  # bounded concurrency
        assert mw.pauses == 0
    finally:
        chain.release.set()
        server.stop()


def test_ses_42_a_peer_past_its_failure_rate_costs_no_more_lookups(env: Env, slow_rpc: str) -> None:
    server, chain = _server(env, slow_rpc)  # the default: 10 failures per second and peer
    try:
        ch = _challenge(server.url)
        codes = []
        start = time.monotonic()
        with httpx.Client(timeout=30) as client:
            for _ in range(60):
                r = client.head(
                    server.url + "/fixed",
                    headers={"Authorization": _stranger_voucher(env, ch, chain)},
                )
                codes.append(r.status_code)
        elapsed = time.monotonic() - start
        assert 429 in codes and set(codes) <= {410, 429}
        # A token bucket of 10 and 10 per second: no more lookups than it grants.
        assert chain.reads <= 10 + 10 * elapsed + 1 < 60
    finally:
        server.stop()
