"""A metered route that answers with one JSON body (not a stream): units are used before the
response starts, so a request that runs dry before it gives them back (SES-27/28)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route as SRoute

from mpp.http import PaymentAuth, PaymentGate, PaymentMiddleware, get_meter
from mpp.session.ports import Store
from tests.http.support import Env, ServerThread


async def _json_answer(request: Request) -> JSONResponse:
    meter = get_meter(request)
    n = int(request.query_params.get("n", "5"))
    for _ in range(n):
        if not await meter.charge(1):  # ran dry: the middleware answers 402 instead
            return JSONResponse({"partial": True})
    return JSONResponse({"tokens": n})


def _spent_once_settled(store: Store, cid: str, expected: int) -> int:
    """`spent` after the request's unused reservation is given back, which happens just after
    the response is sent: wait (bounded) for `expected`, then report what is there."""
    deadline = time.monotonic() + 5
    while True:
        state = store.get(cid)
        assert state is not None
        if state.spent == expected or time.monotonic() > deadline:
            return state.spent
        time.sleep(0.02)


@pytest.fixture
def served(env: Env) -> Iterator[tuple[ServerThread, PaymentGate]]:
    gate = env.gate()
    app: Any = Starlette(
        routes=[SRoute("/stream", _json_answer, methods=["GET"])],
        middleware=[Middleware(PaymentMiddleware, gate=gate)],
    )
    thread = ServerThread(app).start()
    try:
        yield thread, gate
    finally:
        thread.stop()


def test_ses_27_unstarted_units_are_given_back_on_402(
    served: tuple[ServerThread, PaymentGate], env: Env
) -> None:
    """SES-27/28: 30 units used for an answer that never starts (the deposit covers 20) are not
    charged: the request ends as a 402 and `spent` is back to what was delivered before."""
    server, gate = served
    auth = PaymentAuth(env.payer_for(), allow_insecure=True, deposit=200, prepay_units=10)
    with httpx.Client(auth=auth, timeout=30) as client:
        ok = client.get(server.url + "/stream?n=5")
        assert ok.status_code == 200 and ok.json() == {"tokens": 5}
        cid = auth.receipts[-1]["channelId"]
        store = gate.engine.store
        assert _spent_once_settled(store, cid, 5 * 10) == 5 * 10
        too_big = client.get(server.url + "/stream?n=30")
        assert too_big.status_code == 402
        assert "payment-receipt" not in too_big.headers  # CORE-33
    assert _spent_once_settled(store, cid, 5 * 10) == 5 * 10  # nothing undelivered charged
