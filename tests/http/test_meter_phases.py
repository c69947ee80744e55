"""The paid response's state machine (mpp.http.server.meter.Phase), observed on a real uvicorn:
reserved → streaming ↔ awaiting voucher → receipted, reserved → started → receipted for a
non-stream answer, and nothing reserved is left behind once receipted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mpp.http import RECEIPTS_KEY, Meter, PaymentAuth, PaymentMiddleware, Phase, get_meter
from mpp.http.server.meter import _NEXT
from tests.http.support import Env, ServerThread, final_receipt


@pytest.fixture
def recorded(
    env: Env,
) -> Iterator[tuple[str, PaymentMiddleware, list[tuple[Meter, list[Phase]]]]]:
    seen: list[tuple[Meter, list[Phase]]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        meter = get_meter(scope)
        phases = [meter.phase]
        seen.append((meter, phases))
        stream = scope["path"] == "/stream"
        kind = b"text/event-stream" if stream else b"application/json"
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", kind)]}
        )
        phases.append(meter.phase)
        for i in range(40 if stream else 0):
            if not await meter.charge(1):
                break
            body = f"data: {json.dumps({'i': i})}\n\n".encode()
            await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b"" if stream else b"{}"})

    mw = PaymentMiddleware(app, env.gate())
    server = ServerThread(mw).start()
    try:
        yield server.url, mw, seen
    finally:
        server.stop()


def test_a_stream_goes_reserved_streaming_awaiting_receipted(
    recorded: tuple[str, PaymentMiddleware, list[tuple[Meter, list[Phase]]]], env: Env
) -> None:
    url, mw, seen = recorded
    # A fixed lead of 0: every unit needs a voucher, so the stream waits for each one.
    auth = PaymentAuth(env.payer_for(), allow_insecure=True, deposit=5_000, prepay_units=0)
    with httpx.Client(auth=auth, timeout=30) as client:
        with client.stream("GET", url + "/stream") as r:
            r.read()
            final = final_receipt(r.extensions[RECEIPTS_KEY])
        assert client.get(url + "/fixed").status_code == 200
    assert final["units"] == 40
    assert mw.pauses >= 10  # streaming ↔ awaiting voucher, counted once per pause
    (stream, stream_phases), (fixed, fixed_phases) = seen[-2], seen[-1]
    assert stream_phases == [Phase.RESERVED, Phase.STREAMING]
    assert fixed_phases == [Phase.RESERVED, Phase.STARTED]
    for meter in (stream, fixed):
        assert meter.phase is Phase.RECEIPTED and meter.reserved == 0 and meter.unstarted == 0


def test_transitions_outside_the_machine_are_refused() -> None:
    meter = Meter()
    meter.response_started(True)
    assert meter.phase is Phase.STREAMING
    with pytest.raises(RuntimeError, match="streaming -> started"):
        meter._to(Phase.STARTED)
    assert Phase.STREAMING not in _NEXT[Phase.RECEIPTED]  # receipted is final
    assert all(
        Phase.RECEIPTED in _NEXT[p]
        for p in Phase
        if p not in (Phase.RECEIPTED, Phase.AWAITING_VOUCHER)
    )
