"""The async client never blocks its event loop: every store read or write and every chain
call the payer makes while paying runs in a worker thread.

The detector wraps the payer's record store and chain adapter: a call made from a thread that
is running an event loop is recorded. Real uvicorn, anvil, a metered stream with prepay
vouchers, a pause answered with an on-chain topUp, and fixed-price JSON requests.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any, cast

import httpx
import pytest

from mpp.http import RECEIPTS_KEY, PaymentAuth
from mpp.session.payer import Payer, PayerChain, PayerRecordStore
from mpp.session.policy import SpendingPolicy
from mpp.store.payer_records import PayerRecords
from tests.http.support import Counters, Env, ServerThread, final_receipt, plain_app


class LoopGuard:
    """Forwards every method call to `inner`; remembers those made on an event loop."""

    def __init__(self, inner: object, name: str, seen: list[str]) -> None:
        self._inner, self._name, self._seen = inner, name, seen
        self.calls = 0
        self._lock = threading.Lock()

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._inner, attr)
        if not callable(value):
            return value

        def guarded(*args: Any, **kw: Any) -> Any:
            with self._lock:
                self.calls += 1
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                pass  # a worker thread: fine
            else:
                self._seen.append(f"{self._name}.{attr}")
            return value(*args, **kw)

        return guarded


@pytest.fixture
def server(env: Env) -> Iterator[ServerThread]:
    thread = ServerThread(plain_app(env.gate(), Counters())).start()
    try:
        yield thread
    finally:
        thread.stop()


def _guarded_payer(env: Env, seen: list[str]) -> tuple[Payer, Callable[[], int]]:
    records = LoopGuard(PayerRecords(str(env.tmp / "payer.db")), "records", seen)
    chain = LoopGuard(env.devnet.chain(), "chain", seen)
    payer = Payer(
        env.payer_key,
        records=cast(PayerRecordStore, records),
        chain=cast(PayerChain, chain),
        policy=SpendingPolicy(max_amount_per_unit=10_000, max_deposit=10**7),
    )
    return payer, lambda: records.calls + chain.calls


async def test_async_client_keeps_store_and_chain_off_the_event_loop(
    server: ServerThread, env: Env
) -> None:
    seen: list[str] = []
    payer, calls = _guarded_payer(env, seen)
    # A small deposit: the stream runs past it, so the client tops up on chain mid-stream.
    auth = PaymentAuth(payer, allow_insecure=True, deposit=1_500, topup_amount=3_000)
    async with httpx.AsyncClient(auth=auth, timeout=30) as client:
        async with client.stream("GET", server.url + "/stream?n=300") as r:
            assert r.status_code == 200
            body = await r.aread()
            final = final_receipt(r.extensions[RECEIPTS_KEY])
        for _ in range(2):
            fixed = await client.get(server.url + "/cheap")
            assert fixed.status_code == 200
    await auth.aclose()
    assert len([e for e in body.split(b"\n\n") if e]) == 300
    assert final["spent"] == "3000" and final["units"] == 300
    onchain = env.devnet.chain().read_channel(env.devnet.escrow, final["channelId"])
    assert onchain.deposit == 4_500  # the topUp ran (through the guarded payer)
    assert calls() > 10  # the detector saw the payer work
    assert seen == [], f"blocking calls on the event loop: {sorted(set(seen))}"
