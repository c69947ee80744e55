"""Fuzzing the ASGI payment middleware with random and mutated credentials.

A real stack: PaymentMiddleware → PaymentGate → SessionServer on SQLite, against anvil (Tempo
mode) with our escrow and one real open channel. The seeds are valid credentials for that
channel (vouchers signed by its payer, for a fixed-price and a metered SSE route); the fuzzer
mutates them (JSON structure, text, raw bytes) and sends them with random methods, bodies and
extra headers, calling the ASGI app in process.

Contract: never a 500 and never an exception out of the app; every error is
`application/problem+json` with a type under https://paymentauth.org/problems/ and the status
it maps to; a 402 carries a Payment challenge and `Cache-Control: no-store`; no receipt on
non-2xx; a 2xx carries a parseable receipt and `Cache-Control: private`.

Rows: CORE-24/25/26/27/29/30/33/34/35, CORE-40 (caps), SES-40/41/42, AMB-04.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpp.chain.devnet import Devnet
from mpp.core import (
    PROBLEM_BASE,
    ChallengeIssuer,
    Credential,
    parse_challenge,
    parse_challenges,
    parse_receipt,
)
from mpp.http import PaymentGate, PaymentMiddleware, Price, Route, get_meter
from mpp.session.engine import SessionServer
from mpp.session.terms import SessionTerms
from mpp.session.voucher import sign_voucher
from mpp.store.sqlite import SqliteStore
from tests.fuzz.strategies import FUZZ_EXAMPLES, mutated, mutated_json, to_credential_header

SECRET = b"fuzz-middleware-secret-0123456789abcdef"
TOKEN = "0x20c0000000000000000000000000000000000000"
DEPOSIT = 10**6
MW_EXAMPLES = max(20, FUZZ_EXAMPLES // 2)
ALLOWED = {200, 400, 402, 403, 409, 410, 422, 429, 431, 503}


# --- the app under test ---------------------------------------------------------------------------


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["path"] == "/stream":
        meter = get_meter(scope)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for i in range(3):
            if not await meter.charge(1):
                break
            chunk = f"data: {i}\n\n".encode()
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    body = b'{"ok":true}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"11")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass
class Stack:
    app: Any
    gate: PaymentGate
    payer_key: str
    channel_id: str
    escrow: str
    chain_id: int
    seeds: list[str]  # Authorization values
    seed_json: list[dict[str, Any]]


async def _call(
    app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> tuple[int, dict[str, list[str]], bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5555),
        "server": ("127.0.0.1", 80),
    }
    sent = False
    start: dict[str, Any] = {}
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await anyio.sleep(3600)  # no disconnect while the response is produced
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            assert not start, "response started twice"
            start.update(message)
        elif message["type"] == "http.response.body":
            assert start, "body before start"
            chunks.append(bytes(message.get("body", b"")))

    with anyio.fail_after(20):
        await app(scope, receive, send)
    out: dict[str, list[str]] = {}
    for k, v in start.get("headers", []):
        out.setdefault(bytes(k).decode("latin-1").lower(), []).append(bytes(v).decode("latin-1"))
    return int(start.get("status", 0)), out, b"".join(chunks)


def request(
    stack: Stack, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> tuple[int, dict[str, list[str]], bytes]:
    return anyio.run(_call, stack.app, method, path, headers, body)


def check_answer(status: int, headers: dict[str, list[str]], body: bytes) -> None:
    """The contract every answer obeys, whatever the credential."""
    assert status in ALLOWED, (status, body[:300])
    if status >= 400:
        assert headers.get("content-type") == ["application/problem+json"], headers
        problem = json.loads(body)
        # Payment problems live under PROBLEM_BASE; the Idempotency-Key conflicts (409 in
        # progress, 422 reused for another request) are plain RFC 9457 `about:blank` problems.
        if status in (409, 422):
            assert problem["type"] == "about:blank" or problem["type"].startswith(PROBLEM_BASE)
        else:
            assert problem["type"].startswith(PROBLEM_BASE)
        assert problem["status"] == status
        assert "payment-receipt" not in headers  # CORE-33
        if status == 402:  # CORE-29/34
            challenges = parse_challenges(headers["www-authenticate"])
            assert challenges and all(c.method == "tempo" for c in challenges)
            assert "no-store" in headers["cache-control"][0]
        if status in (429, 503):
            assert headers.get("retry-after")
        return
    receipts = headers.get("payment-receipt", [])
    assert len(receipts) == 1  # CORE-32
    receipt = parse_receipt(receipts[0])
    assert receipt.fields["intent"] == "session"
    assert "private" in headers["cache-control"][0]  # CORE-35


# --- the stack: one real channel on anvil ---------------------------------------------------------


@pytest.fixture(scope="module")
def stack(devnet: Devnet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    snapshot = devnet.snapshot()
    try:
        yield _build(devnet, tmp_path_factory.mktemp("fuzz-mw"))
    finally:
        devnet.revert(snapshot)


def _build(devnet: Devnet, tmp: Path) -> Stack:
    payer, payee = devnet.new_accounts(2)
    payee_key = "0x" + bytes(payee.key).hex()
    payer_key = "0x" + bytes(payer.key).hex()
    terms = SessionTerms(
        amount=1,
        currency=TOKEN,
        recipient=payee.address.lower(),
        escrow_contract=devnet.escrow,
        chain_id=devnet.chain_id,
        suggested_deposit=DEPOSIT,
    )
    engine = SessionServer(
        SqliteStore(str(tmp / "server.db")), devnet.chain(payee_key, fee_token=TOKEN), terms
    )
    issuer = ChallengeIssuer(SECRET, realm="fuzz.local", clock=lambda: datetime.now(UTC))
    routes = [
        Route("/paid", Price(amount=5, description="five")),
        Route("/stream", Price(amount=1, unit_type="llm_token", suggested_deposit=DEPOSIT)),
    ]
    gate = PaymentGate(engine, issuer, routes, failure_rate=None)
    app = PaymentMiddleware(_app, gate, voucher_timeout=0.2, reserve_units=2)
    cid, _ = devnet.chain(payer_key).open_channel(
        devnet.escrow, token=TOKEN, payee=payee.address, deposit=DEPOSIT
    )
    stack = Stack(app, gate, payer_key, cid, devnet.escrow, devnet.chain_id, [], [])
    source = f"did:pkh:eip155:{devnet.chain_id}:{payer.address.lower()}"
    for path in ("/paid", "/stream"):
        status, headers, _ = request(stack, "GET", path, [])
        assert status == 402
        challenge = parse_challenge(headers["www-authenticate"])
        for cum in (10, 1_000, 50_000):
            sig = sign_voucher(payer_key, cid, cum, chain_id=devnet.chain_id, escrow=devnet.escrow)
            payload = {
                "action": "voucher",
                "channelId": cid,
                "cumulativeAmount": str(cum),
                "signature": sig,
            }
            cred = Credential(challenge, payload, source=source)
            stack.seeds.append(cred.to_header())
            stack.seed_json.append(cred.to_json())
    # The seeds work: a voucher advances the channel and pays for the content.
    status, headers, body = request(
        stack, "GET", "/paid", [(b"authorization", stack.seeds[1].encode())]
    )
    check_answer(status, headers, body)
    assert status == 200 and body == b'{"ok":true}'
    return stack


# --- strategies -----------------------------------------------------------------------------------


@st.composite
def authorization(draw: st.DrawFn, stack: Stack) -> bytes:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        value = to_credential_header(draw(mutated_json(draw(st.sampled_from(stack.seed_json)))))
    elif kind == 1:
        value = draw(mutated(stack.seeds, max_ops=3))
    elif kind == 2:
        value = draw(st.sampled_from(stack.seeds))  # valid (maybe stale by now)
    elif kind == 3:
        value = draw(st.text(max_size=120))
    else:
        return draw(st.binary(max_size=200))
    return value.encode("utf-8", "surrogatepass")


@st.composite
def requests(draw: st.DrawFn, stack: Stack) -> tuple[str, str, list[tuple[bytes, bytes]], bytes]:
    method = draw(st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE"]))
    path = draw(st.sampled_from(["/paid", "/stream"]))
    headers = [
        (b"authorization", v) for v in draw(st.lists(authorization(stack), min_size=1, max_size=2))
    ]
    extra = draw(
        st.lists(
            st.sampled_from(
                [
                    (b"accept", b"text/event-stream"),
                    (b"idempotency-key", b"k-1"),
                    (b"idempotency-key", b"\xff\x00"),
                    (b"content-type", b"application/json"),
                    (b"accept-payment", b"tempo/session;q=0.5, */*;q=2"),
                ]
            ),
            max_size=3,
        )
    )
    body = draw(st.sampled_from([b"", b"{}", b'{"x":1}', b"\xff\xfe"]))
    return method, path, headers + extra, body


# --- the tests ------------------------------------------------------------------------------------

MW_FUZZ = settings(
    max_examples=MW_EXAMPLES,
    deadline=None,  # a voucher may hit the chain (anvil) or wait out voucher_timeout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@MW_FUZZ
@given(data=st.data())
def test_core_25_middleware_fuzz_never_500(stack: Stack, data: st.DataObject) -> None:
    """CORE-25..30/33..35, SES-40/41, AMB-04: random and mutated credentials → a problem+json
    answer (or a paid 2xx with a receipt), never a 500, never an exception."""
    method, path, headers, body = data.draw(requests(stack))
    status, out, payload = request(stack, method, path, headers, body)
    check_answer(status, out, payload)


@settings(max_examples=max(10, MW_EXAMPLES // 5), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(values=st.lists(st.binary(min_size=0, max_size=64 * 1024 + 64), min_size=1, max_size=3))
def test_core_40_middleware_oversized_and_binary_headers(stack: Stack, values: list[bytes]) -> None:
    """CORE-24/40: raw bytes (any size up to past the 64 KiB cap), one or several values."""
    headers = [(b"authorization", b"Payment " + v) for v in values]
    status, out, payload = request(stack, "GET", "/paid", headers)
    check_answer(status, out, payload)
    if len(values) > 1:
        assert status == 400  # CORE-24


@pytest.mark.parametrize(
    "value",
    [
        b"Payment",
        b"Payment ",
        b"Payment !!!",
        b"Payment e30",
        b"Payment bnVsbA",
        b"payment\t" + b"A" * 70_000,
        "Payment é".encode(),
        b"Bearer x, Payment e30",
    ],
    ids=lambda v: v[:16].decode("latin-1"),
)
def test_core_25_malformed_credentials_answer_402(stack: Stack, value: bytes) -> None:
    """CORE-25/40: malformed credentials → 402 malformed-credential with a fresh challenge
    (431 above the size cap), as problem+json."""
    status, out, body = request(stack, "GET", "/paid", [(b"authorization", value)])
    check_answer(status, out, body)
    assert status in (402, 431)
    assert json.loads(body)["type"].endswith("malformed-credential")


def test_ses_40_unknown_channel_is_410(stack: Stack) -> None:
    """SES-40/AMB-04: a well-signed voucher for a channel that is not on chain → 410 with a
    fresh challenge (what mppx's client expects after a rejected open)."""
    cid = "0x" + os.urandom(32).hex()
    cred = json.loads(json.dumps(stack.seed_json[0]))
    sig = sign_voucher(stack.payer_key, cid, 10, chain_id=stack.chain_id, escrow=stack.escrow)
    cred["payload"].update(channelId=cid, signature=sig)
    status, out, body = request(
        stack, "POST", "/paid", [(b"authorization", to_credential_header(cred).encode())]
    )
    check_answer(status, out, body)
    assert status == 410 and json.loads(body)["type"].endswith("session/channel-not-found")
    assert parse_challenges(out["www-authenticate"])
