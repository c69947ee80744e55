"""Fixed-price routes over a real uvicorn: 402 challenges, paid retries, receipts, errors.

Rows: CORE-13 (digest), CORE-24 (two credentials → 400), CORE-25 (malformed → 402),
CORE-28 (policy → 403), CORE-29/31/34 (402 shape), CORE-32/33/35 (receipts), CORE-44 (no side
effects unpaid), CORE-47/SES-29 (idempotent replay), SES-39 (channel reuse), SES-42 (429).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mpp.core.challenge import parse_challenges
from mpp.core.receipt import parse_receipt
from mpp.http import PaymentAuth
from tests.http.support import (
    Counters,
    Env,
    ServerThread,
    fastapi_app,
    plain_app,
    starlette_app,
)

PROBLEMS = "https://paymentauth.org/problems/"


@pytest.fixture(params=["plain", "starlette", "fastapi"])
def served(request: pytest.FixtureRequest, env: Env) -> Iterator[tuple[ServerThread, Counters]]:
    counters = Counters()
    build = {"plain": plain_app, "starlette": starlette_app, "fastapi": fastapi_app}[request.param]
    server = ServerThread(build(env.gate(), counters)).start()
    try:
        yield server, counters
    finally:
        server.stop()


def _problem(r: httpx.Response) -> dict[str, Any]:
    assert r.headers["content-type"] == "application/problem+json"
    data: dict[str, Any] = json.loads(r.content)
    return data


def test_core_29_31_34_44_unpaid_gets_402_and_handler_not_called(
    served: tuple[ServerThread, Counters],
) -> None:
    server, counters = served
    r = httpx.get(server.url + "/fixed")
    assert r.status_code == 402
    assert r.headers["cache-control"] == "no-store"  # CORE-34
    assert r.headers["retry-after"] == "1"  # CORE-31
    assert "payment-receipt" not in r.headers  # CORE-33
    (ch,) = parse_challenges(r.headers.get_list("www-authenticate"))
    assert (ch.method, ch.intent, ch.request["amount"]) == ("tempo", "session", "1000")
    assert ch.digest is None
    assert _problem(r)["type"] == PROBLEMS + "payment-required"
    assert counters.calls.get("/fixed") is None  # CORE-44


def test_ses_fixed_price_paid_twice_reuses_channel(
    served: tuple[ServerThread, Counters], env: Env
) -> None:
    server, counters = served
    payer = env.payer_for()
    with httpx.Client(auth=PaymentAuth(payer, allow_insecure=True)) as client:
        first = client.get(server.url + "/fixed")
        second = client.get(server.url + "/fixed")
    assert first.status_code == second.status_code == 200
    assert counters.calls["/fixed"] == 2
    r1 = parse_receipt(first.headers["payment-receipt"]).to_json()
    r2 = parse_receipt(second.headers["payment-receipt"]).to_json()
    assert r1["channelId"] == r2["channelId"]  # SES-39: one channel, one counter
    assert (r1["spent"], r2["spent"]) == ("1000", "2000")
    for r in (first, second):
        assert "private" in r.headers["cache-control"]  # CORE-35
    assert (
        len(
            payer.records.find(  # type: ignore[attr-defined]
                payer=payer.address,
                payee=env.payee,
                token=env.terms().currency,
                escrow=env.devnet.escrow,
                chain_id=env.devnet.chain_id,
            )
        )
        == 1
    )
