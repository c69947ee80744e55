"""`PaymentAuth` under httpx2 (encode's next httpx, which the openai 3 SDK uses), sync and
async, against a real paid server on loopback and anvil (Tempo mode): the same one auth flow as
under httpx, including a metered stream with mid-stream vouchers and a top-up (SES-31/32), pay
ahead on the second request (AMB-05) and a fixed-price JSON answer with its receipt (CORE-32)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest

from mpp.core.receipt import parse_receipt
from mpp.http import RECEIPTS_KEY, PaymentAuth
from tests.http.support import Counters, Env, ServerThread, fastapi_app, final_receipt


@pytest.fixture
def server(env: Env) -> Iterator[tuple[ServerThread, Counters]]:
    counters = Counters()
    running = ServerThread(fastapi_app(env.gate(), counters)).start()
    try:
        yield running, counters
    finally:
        running.stop()


def test_httpx2_sync_stream_with_vouchers_topup_then_pay_ahead(
    server: tuple[ServerThread, Counters], env: Env
) -> None:
    running, _ = server
    payer = env.payer_for()
    auth = PaymentAuth(
        payer, allow_insecure=True, deposit=1_500, prepay_units=50, topup_amount=3_000
    )
    with httpx2.Client(auth=auth, timeout=30) as client:
        with client.stream("GET", running.url + "/stream?n=300") as r:
            assert r.status_code == 200
            body = r.read()
            receipts = list(r.extensions[RECEIPTS_KEY])
        events = [e for e in body.decode().split("\n\n") if e]
        assert len(events) == 300 and b"payment-" not in body  # SES-32: stripped for the caller
        final = final_receipt(receipts)
        assert final["spent"] == "3000" and final["units"] == 300 and final["cost"] == "3000"
        onchain = env.devnet.chain().read_channel(env.devnet.escrow, final["channelId"])
        assert onchain.deposit == 4_500  # the top-up went on chain
        # AMB-05: the route's challenge is known, the next request pays on its first attempt.
        fixed = client.get(running.url + "/fixed")
        assert fixed.status_code == 200
        receipt = parse_receipt(fixed.headers["payment-receipt"]).to_json()
        assert receipt["channelId"] == final["channelId"]
        assert fixed.headers["x-mpp-cost"] == receipt["cost"]
    assert payer.channel(final["channelId"]) is not None


async def test_httpx2_async_stream_and_json(
    server: tuple[ServerThread, Counters], env: Env
) -> None:
    running, _ = server
    payer = env.payer_for()
    auth = PaymentAuth(payer, allow_insecure=True, deposit=3_000, prepay_units=20)
    async with httpx2.AsyncClient(auth=auth, timeout=30) as client:
        async with client.stream("GET", running.url + "/stream?n=120") as r:
            assert r.status_code == 200
            body = await r.aread()
            final = final_receipt(r.extensions[RECEIPTS_KEY])
        assert body.count(b"data: {") == 120 and b"payment-" not in body
        assert final["spent"] == "1200" and final["units"] == 120
        fixed = await client.get(running.url + "/fixed")
        assert fixed.status_code == 200 and fixed.json()["path"] == "/fixed"
    receipt = parse_receipt(fixed.headers["payment-receipt"]).to_json()
    assert receipt["cost"] == "1000" and receipt["channelId"] == final["channelId"]
    assert int(receipt["balance"]) == 3_000 - int(receipt["spent"])
