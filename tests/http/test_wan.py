"""A paying client on its defaults over a 50 ms round trip (tests.delay_proxy): the bandwidth ×
delay window keeps the stream ahead of the meter, so the server never pauses it (SES-30/31).

Real uvicorn, anvil and a loopback proxy that delays every byte by half the RTT each way. The
long form, with the unpaid baseline and timings, is `scripts/bench.py` (WAN case).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from mpp.http import RECEIPTS_KEY, PaymentAuth, PaymentMiddleware
from tests.delay_proxy import DelayProxy
from tests.http.support import Counters, Env, ServerThread, final_receipt, plain_app

RTT = 0.05


@pytest.fixture
def wan(env: Env) -> Iterator[tuple[PaymentMiddleware, DelayProxy]]:
    app = plain_app(env.gate(), Counters())
    assert isinstance(app, PaymentMiddleware)
    server = ServerThread(app).start()
    try:
        with DelayProxy(server.port, RTT) as proxy:
            yield app, proxy
    finally:
        server.stop()


def _stream(client: httpx.Client, url: str) -> tuple[int, dict[str, object]]:
    with client.stream("GET", url) as r:
        assert r.status_code == 200
        events = [e for e in r.read().decode().split("\n\n") if e]
        assert all(json.loads(e.removeprefix("data: ")) for e in events)
        return len(events), final_receipt(r.extensions[RECEIPTS_KEY])


@pytest.mark.parametrize("rate", [100, None], ids=["100-per-s", "unpaced"])
def test_ses_31_no_steady_state_pauses_over_50ms_rtt_on_defaults(
    wan: tuple[PaymentMiddleware, DelayProxy], env: Env, rate: int | None
) -> None:
    mw, proxy = wan
    # Every default but the deposit (the route suggests 200 units; these streams use 800).
    auth = PaymentAuth(env.payer_for(), allow_insecure=True, deposit=20_000)
    pace = "" if rate is None else f"&rate={rate}"
    with httpx.Client(auth=auth, timeout=30) as client:
        # The first streams open the channel and measure the link and the rate: an unpaced
        # source is limited by the window itself, which grows each round trip (slow start).
        n, first = _stream(client, f"{proxy.url}/stream?n=200{pace}")
        assert n == 200 and first["units"] == 200
        n, _ = _stream(client, f"{proxy.url}/stream?n=300{pace}")
        assert n == 300
        warm = mw.pauses
        # Steady state: the window is sized; the server never waits for a voucher.
        n, final = _stream(client, f"{proxy.url}/stream?n=300{pace}")
    assert n == 300 and final["units"] == 300 and final["spent"] == "8000"
    assert final["channelId"] == first["channelId"]
    assert mw.pauses == warm, f"{mw.pauses - warm} pauses in steady state ({warm} warming up)"
    if rate is not None:
        assert warm == 0  # 100 units/s × 50 ms fits the initial window: no pause at all
