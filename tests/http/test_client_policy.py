"""Malicious servers against the paying client's policy (CORE-39, mpp.session.budget).

A real uvicorn on loopback plays a server that lies: it takes the client's open credential (and
never broadcasts it), streams a couple of tokens, then asks for the whole deposit; or asks for
a voucher again and again without sending anything; or changes its recipient when the client
retries. The client ends the stream with a typed error (ServerOverreach) or declines, and signs
nothing beyond what was delivered plus its lookahead window plus one unit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from mpp.core.binding import ChallengeIssuer
from mpp.core.credential import parse_credential
from mpp.core.receipt import Receipt
from mpp.http import PaymentAuth, PaymentDeclined
from mpp.session.budget import ServerOverreach
from mpp.session.payer import Payer
from mpp.session.policy import SpendingPolicy
from mpp.session.terms import SessionTerms
from tests.http.support import ServerThread

KEY = "0x" + "11" * 32
PAYEE = "0x" + "22" * 20
OTHER = "0x" + "33" * 20
ESCROW = "0x" + "44" * 20
TOKEN = "0x20c0000000000000000000000000000000000000"
PRICE = 10
DEPOSIT = 100_000


class Liar:
    """A server that bills per token and misbehaves in `mode` after the open."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.issuer = ChallengeIssuer(b"liar-secret-0123456789abcdef-0123456789", realm="liar")
        self.vouchers: list[int] = []  # cumulative amounts the client signed in vouchers
        self.opens = 0
        self.requests = 0

    def terms(self, recipient: str = PAYEE) -> SessionTerms:
        return SessionTerms(
            amount=PRICE, currency=TOKEN, recipient=recipient, escrow_contract=ESCROW,
            chain_id=31337, unit_type="llm_token", suggested_deposit=DEPOSIT,
        )  # fmt: skip

    def challenge(self, recipient: str = PAYEE) -> Response:
        ch = self.issuer.issue(
            method="tempo", intent="session", request=self.terms(recipient).to_request(),
            now=datetime.now(UTC),
        )  # fmt: skip
        return Response(
            json.dumps({"type": "https://paymentauth.org/problems/payment-required"}),
            status_code=402,
            headers={"www-authenticate": ch.to_header(), "cache-control": "no-store"},
            media_type="application/problem+json",
        )

    async def handle(self, request: Request) -> Response:
        header = request.headers.get("authorization")
        body = await request.body()
        if header is None:
            return self.challenge()
        payload = parse_credential(header).payload
        cid = str(payload["channelId"])
        if payload["action"] == "voucher" and not body:  # a management request
            self.vouchers.append(int(payload["cumulativeAmount"]))
            return Response(status_code=200)
        self.requests += 1
        if self.mode == "huge-topup" and payload["action"] == "voucher":
            problem = {
                "type": "https://paymentauth.org/problems/session/insufficient-balance",
                "status": 402, "spent": "20", "acceptedCumulative": str(PRICE),
                "requiredTopUp": str(DEPOSIT // 2),  # "authorize half the deposit first"
            }  # fmt: skip
            answer = self.challenge()
            answer.body = json.dumps(problem).encode()
            answer.headers["content-length"] = str(len(answer.body))
            return answer
        if payload["action"] == "open":
            self.opens += 1
            if self.mode == "recipient-change":
                return self.challenge(OTHER)  # "retry, but pay someone else"
        signed = int(payload["cumulativeAmount"])
        spent = "\u00b2" if self.mode == "unicode-receipt" else "0"  # "²": str.isdigit is True
        receipt = Receipt.success(
            method="tempo", reference=cid, timestamp=datetime.now(UTC), intent="session",
            channelId=cid, challengeId="x", acceptedCumulative=str(signed), spent=spent,
        ).to_header()  # fmt: skip
        return StreamingResponse(
            self.stream(cid),
            media_type="text/event-stream",
            headers={"payment-receipt": receipt},
        )

    async def stream(self, cid: str) -> AsyncIterator[bytes]:
        for i in range(2):
            yield f'data: {{"token": {i}}}\n\n'.encode()
        asks = 300 if self.mode == "endless" else 1
        for _ in range(asks):
            required = str(DEPOSIT if self.mode == "whole-deposit" else 3 * PRICE)
            if self.mode == "unicode-need":
                required = "\uff13\uff10"  # fullwidth "30"
            event = {
                "channelId": cid, "requiredCumulative": required,
                "acceptedCumulative": str(PRICE), "deposit": str(DEPOSIT),
            }  # fmt: skip
            yield f"event: payment-need-voucher\ndata: {json.dumps(event)}\n\n".encode()
        yield b"data: [DONE]\n\n"


@pytest.fixture
def liar(request: pytest.FixtureRequest) -> Iterator[tuple[Liar, str]]:
    server = Liar(request.param)
    app = Starlette(routes=[Route("/chat", server.handle, methods=["POST", "HEAD"])])
    thread = ServerThread(app).start()
    try:
        yield server, thread.url
    finally:
        thread.stop()


def _auth(tmp_path: Path) -> PaymentAuth:
    payer = Payer(
        KEY, records_path=tmp_path / "payer.db",
        policy=SpendingPolicy(max_amount_per_unit=100, max_deposit=DEPOSIT),
    )  # fmt: skip
    return PaymentAuth(payer, allow_insecure=True, prepay_units=4)


@pytest.mark.parametrize("liar", ["whole-deposit"], indirect=True)
def test_core_39_whole_deposit_need_voucher_ends_the_stream(
    liar: tuple[Liar, str], tmp_path: Path
) -> None:
    server, url = liar
    auth = _auth(tmp_path)
    with httpx.Client(auth=auth, timeout=10) as client:
        with pytest.raises(ServerOverreach), client.stream("POST", url + "/chat", json={}) as r:
            for _ in r.iter_lines():
                pass
    limit = 0 + 3 * PRICE + 2 * 4 * PRICE  # delivered 2 + one unit + the window (2 × prepay)
    assert all(v <= limit for v in server.vouchers)
    rec = auth.payer.channel(auth.payer.records.all()[0].channel_id)  # type: ignore[attr-defined]
    assert rec is not None and rec.cumulative <= limit


@pytest.mark.parametrize("liar", ["endless"], indirect=True)
def test_core_39_endless_need_voucher_is_capped(liar: tuple[Liar, str], tmp_path: Path) -> None:
    server, url = liar
    auth = _auth(tmp_path)
    with httpx.Client(auth=auth, timeout=10) as client:
        with pytest.raises(ServerOverreach, match="without sending"):
            with client.stream("POST", url + "/chat", json={}) as r:
                for _ in r.iter_lines():
                    pass
    assert len(server.vouchers) <= 3  # not 300


@pytest.mark.parametrize("liar", ["endless"], indirect=True)
async def test_core_39_endless_need_voucher_is_capped_async(
    liar: tuple[Liar, str], tmp_path: Path
) -> None:
    server, url = liar
    auth = _auth(tmp_path)
    async with httpx.AsyncClient(auth=auth, timeout=10) as client:
        with pytest.raises(ServerOverreach):
            async with client.stream("POST", url + "/chat", json={}) as r:
                async for _ in r.aiter_lines():
                    pass
    assert len(server.vouchers) <= 3


@pytest.mark.parametrize("liar", ["recipient-change"], indirect=True)
def test_core_39_recipient_change_on_retry_is_declined(
    liar: tuple[Liar, str], tmp_path: Path
) -> None:
    server, url = liar
    auth = _auth(tmp_path)
    with httpx.Client(auth=auth, timeout=10) as client, pytest.raises(PaymentDeclined):
        client.post(url + "/chat", json={})
    assert server.opens == 1  # one open for PAYEE; nothing for OTHER
    payees = {r.payee for r in auth.payer.records.all()}  # type: ignore[attr-defined]
    assert payees == {PAYEE}


@pytest.mark.parametrize("liar", ["unicode-receipt"], indirect=True)
def test_ses_24_unicode_digits_in_a_receipt_are_rejected(
    liar: tuple[Liar, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SES-24 (amounts are ASCII decimal strings): "²" passes str.isdigit. The client rejects
    the receipt (logged, not recorded) instead of raising a bare ValueError, and the caller
    still reads its stream."""
    _, url = liar
    auth = _auth(tmp_path)
    with caplog.at_level(logging.WARNING, logger="mpp.http"):
        with httpx.Client(auth=auth, timeout=10) as client:
            with client.stream("POST", url + "/chat", json={}) as r:
                lines = [line for line in r.iter_lines() if line]
    assert any("token" in line for line in lines)
    assert "receipt rejected" in caplog.text
    assert all(rec.spent == 0 for rec in auth.payer.records.all())  # type: ignore[attr-defined]


@pytest.mark.parametrize("liar", ["unicode-need"], indirect=True)
def test_ses_24_fullwidth_digits_in_a_need_voucher_sign_nothing(
    liar: tuple[Liar, str], tmp_path: Path
) -> None:
    """A need-voucher asking for fullwidth "３０" is malformed: ignored (logged), nothing signed
    for it, and the stream the caller reads ends normally."""
    server, url = liar
    auth = _auth(tmp_path)
    with httpx.Client(auth=auth, timeout=10) as client:
        with client.stream("POST", url + "/chat", json={}) as r:
            lines = [line for line in r.iter_lines() if line]
    assert any("token" in line for line in lines)
    # Only the prepay-ahead voucher (within delivered 2 + one unit + the window), nothing for it.
    assert all(v <= 3 * PRICE + 2 * 4 * PRICE for v in server.vouchers)
    assert len(server.vouchers) <= 1


@pytest.mark.parametrize("liar", ["huge-topup"], indirect=True)
def test_core_39_a_required_top_up_beyond_max_lead_is_declined(
    liar: tuple[Liar, str], tmp_path: Path
) -> None:
    """A 402 that asks to authorize far ahead of delivery (`requiredTopUp`) is paid only
    within the policy's `max_lead`: beyond it the client declines and signs nothing."""
    server, url = liar
    payer = Payer(
        KEY, records_path=tmp_path / "payer.db",
        policy=SpendingPolicy(max_amount_per_unit=100, max_deposit=DEPOSIT, max_lead=1_000),
    )  # fmt: skip
    auth = PaymentAuth(payer, allow_insecure=True)
    with httpx.Client(auth=auth, timeout=10) as client:
        with client.stream("POST", url + "/chat", json={}) as r:  # opens the channel
            r.read()
        signed = payer.records.all()[0].cumulative  # type: ignore[attr-defined]
        with pytest.raises(PaymentDeclined, match="max_lead"):
            client.post(url + "/chat", json={})
    assert payer.records.all()[0].cumulative == signed  # type: ignore[attr-defined]
    assert server.vouchers == [] or max(server.vouchers) <= signed + 1_000
