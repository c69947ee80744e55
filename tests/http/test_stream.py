"""Metered SSE over a real uvicorn (SES-27/30/31/32/34, AMB-13/15).

The stream runs dry, emits `payment-need-voucher`, pauses, and resumes as soon as the voucher
sent on another request to the same URI is accepted; a need above the deposit makes the client
top up on chain first. The caller never sees payment events.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mpp.core.receipt import parse_receipt
from mpp.http import RECEIPTS_KEY, PaymentAuth
from mpp.session.window import INITIAL_UNITS
from tests.http.support import (
    API_KEY,
    Counters,
    Env,
    ServerThread,
    fastapi_app,
    final_receipt,
    plain_app,
    starlette_app,
)


@pytest.fixture
def fast(env: Env) -> Iterator[tuple[ServerThread, Counters]]:
    counters = Counters()
    server = ServerThread(fastapi_app(env.gate(), counters)).start()
    try:
        yield server, counters
    finally:
        server.stop()


def _events(body: bytes) -> list[str]:
    return [e for e in body.decode().split("\n\n") if e]


def test_ses_31_32_metered_stream_vouchers_and_topup(
    fast: tuple[ServerThread, Counters], env: Env
) -> None:
    server, _ = fast
    payer = env.payer_for()
    auth = PaymentAuth(
        payer, allow_insecure=True, deposit=1_500, prepay_units=50, topup_amount=3_000
    )
    with httpx.Client(auth=auth, timeout=30) as client:
        with client.stream("GET", server.url + "/stream?n=300") as r:
            assert r.status_code == 200
            body = r.read()
            header_receipt = parse_receipt(r.headers["payment-receipt"]).to_json()
            receipts = list(r.extensions[RECEIPTS_KEY])
    events = _events(body)
    assert len(events) == 300 and all(e.startswith("data: {") for e in events)
    assert b"payment-" not in body  # stripped below the caller
    final = final_receipt(receipts)
    assert final["spent"] == "3000" and final["units"] == 300  # AMB-13
    assert header_receipt["channelId"] == final["channelId"]  # SES-32: header and final event
    vouchers = [x for x in receipts[1:-1]]
    assert len(vouchers) >= 3  # management receipts of mid-stream vouchers (and the topUp)
    onchain = env.devnet.chain().read_channel(env.devnet.escrow, final["channelId"])
    assert onchain.deposit == 4_500  # one on-chain topUp of 3000
    assert int(final["acceptedCumulative"]) >= 3_000
    rec = payer.channel(final["channelId"])
    assert rec is not None and rec.spent == 3_000 and rec.deposit == 4_500


async def test_ses_34_two_concurrent_streams_two_channels(
    fast: tuple[ServerThread, Counters], env: Env
) -> None:
    server, _ = fast
    other = env.devnet.new_accounts(1)[0]
    payers = [env.payer_for(), env.payer_for("0x" + other.key.hex(), name="other.db")]

    async def run(payer: Any) -> tuple[bytes, dict[str, Any]]:
        auth = PaymentAuth(payer, allow_insecure=True, deposit=5_000, prepay_units=40)
        async with httpx.AsyncClient(auth=auth, timeout=30) as client:
            async with client.stream("GET", server.url + "/stream?n=150") as r:
                body = await r.aread()
                return body, final_receipt(r.extensions[RECEIPTS_KEY])

    (b1, f1), (b2, f2) = await asyncio.gather(run(payers[0]), run(payers[1]))
    assert f1["channelId"] != f2["channelId"]
    for body, final in ((b1, f1), (b2, f2)):
        assert len(_events(body)) == 150 and b"payment-" not in body
        assert final["spent"] == "1500" and final["units"] == 150


@pytest.mark.parametrize("build", [plain_app, starlette_app], ids=["plain", "starlette"])
def test_ses_32_no_payment_frames_for_api_key_or_unpaid(build: Any, env: Env) -> None:
    server = ServerThread(build(env.gate(), Counters())).start()
    try:
        r = httpx.get(server.url + "/stream?n=30", headers={"Authorization": f"Bearer {API_KEY}"})
        assert r.status_code == 200 and "payment-receipt" not in r.headers
        assert len(_events(r.content)) == 30 and b"payment-" not in r.content
        unpaid = httpx.get(server.url + "/stream?n=30")
        assert unpaid.status_code == 402 and b"payment-need-voucher" not in unpaid.content
    finally:
        server.stop()


def test_ses_31_stream_ends_cleanly_when_no_voucher_comes(env: Env) -> None:
    """A client that never answers need-voucher: the stream ends after the timeout (SES-31)."""
    counters = Counters()
    server = ServerThread(starlette_app(env.gate(), counters, voucher_timeout=0.5)).start()
    try:
        payer = env.payer_for()
        auth = PaymentAuth(payer, allow_insecure=True, deposit=2_000)
        auth.send_voucher = lambda *a, **k: None  # type: ignore[method-assign]
        with httpx.Client(auth=auth, timeout=30) as client:
            r = client.get(server.url + "/stream?n=50")
        assert r.status_code == 200
        events = _events(r.content)
        # The open voucher paid for one unit plus the initial lookahead window, nothing more.
        assert len(events) == 1 + INITIAL_UNITS
        final = final_receipt(r.extensions[RECEIPTS_KEY])
        assert final["spent"] == str(10 * (1 + INITIAL_UNITS))
        assert final["units"] == 1 + INITIAL_UNITS
    finally:
        server.stop()


def test_ses_31_raw_need_voucher_event_fields_are_strings(env: Env) -> None:
    """What a peer client sees without our filter: one need-voucher, then the final receipt."""
    server = ServerThread(starlette_app(env.gate(), Counters(), voucher_timeout=0.3)).start()
    try:
        payer = env.payer_for()
        auth = PaymentAuth(payer, allow_insecure=True, deposit=2_000)
        with httpx.Client(auth=auth, timeout=30) as client:
            r = client.get(server.url + "/stream?n=3")  # pays; then read the raw stream below
        cred_channel = r.extensions[RECEIPTS_KEY][-1]["channelId"]
        rec = payer.channel(cred_channel)
        assert rec is not None
        raw = _raw_stream_after_open(server, auth, r)
        need = [e for e in raw if e.startswith("event: payment-need-voucher")]
        assert len(need) == 1
        data = json.loads(need[0].split("data: ", 1)[1])
        assert set(data) == {"channelId", "requiredCumulative", "acceptedCumulative", "deposit"}
        assert all(isinstance(v, str) for v in data.values())
        assert raw[-1].startswith("event: payment-receipt")
    finally:
        server.stop()


def _raw_stream_after_open(
    server: ServerThread, auth: PaymentAuth, first: httpx.Response
) -> list[str]:
    """Send a voucher credential by hand (no filtering) and return the raw SSE events."""
    from mpp.core.challenge import parse_challenges
    from mpp.core.credential import Credential

    probe = httpx.get(server.url + "/stream?n=3")
    (challenge,) = parse_challenges(probe.headers.get_list("www-authenticate"))
    cid = first.extensions[RECEIPTS_KEY][-1]["channelId"]
    rec = auth.payer.channel(cid)
    assert rec is not None
    payload = auth.payer.voucher_payload(cid, rec.cumulative)  # nothing new: available is 0
    cred = Credential(challenge, payload).to_header()
    n = 2 * (1 + INITIAL_UNITS)  # more than is left authorized
    r = httpx.get(server.url + f"/stream?n={n}", headers={"Authorization": cred}, timeout=30)
    assert r.status_code == 200
    return _events(r.content)
