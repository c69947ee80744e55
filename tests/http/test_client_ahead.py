"""The client pays ahead: a cached session challenge + an open channel → one round trip.

Rows: AMB-05 (a session challenge is reused by many credentials until `expires`), CORE-14 (never
an expired one), CORE-42/CORE-39 (never where the client may not pay), SES-04 (reuse only a
channel that covers the price), SES-29/CORE-47 (a fallback retry never charges twice), SES-27
(a first-ever JSON request that the open voucher does not cover is topped up on the same
channel), SES-31/34 (prepay vouchers pipelined: a stream slower than the voucher round trip
never pauses for a need-voucher).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from mpp.core.binding import ChallengeIssuer
from mpp.core.errors import InsecureTransport
from mpp.core.receipt import parse_receipt
from mpp.http import (
    RECEIPTS_KEY,
    PaymentAuth,
    PaymentGate,
    PaymentMiddleware,
    Price,
    Route,
    get_meter,
)
from mpp.session.policy import PolicyViolation, SpendingPolicy
from tests.http.support import (
    FIXED,
    PER_TOKEN,
    Counters,
    Env,
    ServerThread,
    api_key_ok,
    final_receipt,
    starlette_app,
)


@dataclass
class Seen:
    """Every request the server got: (method, path, carried a Payment credential, status)."""

    requests: list[tuple[str, str, bool, int]] = field(default_factory=list)
    need_vouchers: int = 0

    def paid_path(self, path: str) -> list[tuple[str, bool, int]]:
        return [(m, paid, s) for m, p, paid, s in self.requests if p == path]


def spy(app: Any, seen: Seen) -> Any:
    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        paid = any(k == b"authorization" and v.startswith(b"Payment ") for k, v in scope["headers"])

        async def watch(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":  # before the client can see it
                seen.requests.append((scope["method"], scope["path"], paid, message["status"]))
            elif b"event: payment-need-voucher" in message.get("body", b""):
                seen.need_vouchers += 1
            await send(message)

        await app(scope, receive, watch)

    return wrapped


class Served:
    def __init__(self, env: Env, gate: PaymentGate | None = None, **mw: Any) -> None:
        self.seen = Seen()
        self.counters = Counters()
        self.gate = gate or env.gate()
        self.server = ServerThread(spy(starlette_app(self.gate, self.counters, **mw), self.seen))
        self.server.start()
        self.url = self.server.url


@pytest.fixture
def served(env: Env) -> Iterator[Served]:
    s = Served(env)
    try:
        yield s
    finally:
        s.server.stop()


def _spent(r: httpx.Response) -> int:
    return int(parse_receipt(r.headers["payment-receipt"]).to_json()["spent"])


def test_amb_05_open_channel_pays_on_the_first_attempt(served: Served, env: Env) -> None:
    auth = PaymentAuth(env.payer_for(), allow_insecure=True, deposit=10_000)
    with httpx.Client(auth=auth) as client:
        first = client.get(served.url + "/fixed")
        assert served.seen.paid_path("/fixed") == [("GET", False, 402), ("GET", True, 200)]
        served.seen.requests.clear()
        second = client.get(served.url + "/fixed")
        third = client.get(served.url + "/fixed?x=1")  # the query is not part of the key
    assert first.status_code == second.status_code == third.status_code == 200
    # SES-04 + AMB-05: exactly one HTTP request each, carrying the voucher credential
    assert served.seen.paid_path("/fixed") == [("GET", True, 200), ("GET", True, 200)]
    assert [_spent(r) for r in (first, second, third)] == [1_000, 2_000, 3_000]
    assert served.counters.calls["/fixed"] == 3


async def test_amb_05_async_client_and_other_routes_keep_their_own_challenge(
    served: Served, env: Env
) -> None:
    auth = PaymentAuth(env.payer_for(), allow_insecure=True, deposit=10_000)
    async with httpx.AsyncClient(auth=auth) as client:
        assert (await client.get(served.url + "/fixed")).status_code == 200
        cheap = await client.get(served.url + "/cheap")  # another price: its own challenge
        assert cheap.status_code == 200
        served.seen.requests.clear()
        results = await asyncio.gather(
            client.get(served.url + "/fixed"), client.get(served.url + "/cheap")
        )
    assert [r.status_code for r in results] == [200, 200]
    # No unpaid round trip. Two vouchers signed from the same `spent` race on one channel: the
    # lower may land second and be refused as stale; its one fallback re-signs, charging once.
    assert all(paid for _, _, paid, _ in served.seen.requests)
    assert len(served.seen.requests) in (2, 3)
    assert served.counters.calls == {"/fixed": 2, "/cheap": 2}
    receipts = [parse_receipt(r.headers["payment-receipt"]).to_json() for r in results]
    assert receipts[0]["channelId"] == receipts[1]["channelId"]  # SES-39: one channel
    state = env.engine().store.get(receipts[0]["channelId"])
    assert state is not None and state.spent == 2_200


def test_core_14_a_challenge_near_or_past_expires_is_never_used(env: Env) -> None:
    issuer = ChallengeIssuer(
        b"x" * 40, realm="short.test", ttl=timedelta(seconds=6), clock=lambda: datetime.now(UTC)
    )
    gate = PaymentGate(env.engine(), issuer, [Route("/fixed", FIXED)], authorize=api_key_ok)
    s = Served(env, gate)
    try:
        auth = PaymentAuth(env.payer_for(), allow_insecure=True, deposit=10_000)
        with httpx.Client(auth=auth) as client:
            assert client.get(s.url + "/fixed").status_code == 200
            assert client.get(s.url + "/fixed").status_code == 200  # ~6 s left: reused
            assert s.seen.paid_path("/fixed")[-1] == ("GET", True, 200)
            assert len(s.seen.requests) == 3
            time.sleep(1.5)  # < 5 s left (REUSE_MARGIN): treated as expired, never sent
            s.seen.requests.clear()
            r = client.get(s.url + "/fixed")
        assert r.status_code == 200
        assert s.seen.paid_path("/fixed") == [("GET", False, 402), ("GET", True, 200)]
    finally:
        s.server.stop()


def test_amb_05_rotated_secret_falls_back_once_and_charges_once(served: Served, env: Env) -> None:
    auth = PaymentAuth(env.payer_for(), allow_insecure=True, deposit=10_000)
    with httpx.Client(auth=auth) as client:
        first = client.post(served.url + "/fixed", content=b"{}")
        # Rotation without keeping the old secret: the cached challenge no longer binds.
        served.gate.issuer = ChallengeIssuer(
            b"r" * 40, realm="test.local", clock=lambda: datetime.now(UTC)
        )
        served.seen.requests.clear()
        second = client.post(served.url + "/fixed", content=b"{}")
        # the pre-attached credential is refused once, then the ordinary flow pays once
        assert served.seen.requests == [
            ("POST", "/fixed", True, 402),
            ("POST", "/fixed", True, 200),
        ]
        served.seen.requests.clear()
        third = client.post(served.url + "/fixed", content=b"{}")  # the fresh one is cached
        assert served.seen.requests == [("POST", "/fixed", True, 200)]
    assert second.status_code == third.status_code == 200
    assert [_spent(r) for r in (first, second, third)] == [1_000, 2_000, 3_000]  # SES-29
    assert served.counters.calls["/fixed"] == 3
    cid = parse_receipt(second.headers["payment-receipt"]).to_json()["channelId"]
    state = env.engine().store.get(cid)
    assert state is not None and state.spent == 3_000


def test_core_42_39_cached_challenge_never_sent_where_paying_is_refused(
    served: Served, env: Env
) -> None:
    payer = env.payer_for()
    auth = PaymentAuth(payer, allow_insecure=True, deposit=10_000)
    with httpx.Client(auth=auth) as client:
        assert client.get(served.url + "/fixed").status_code == 200
        served.seen.requests.clear()
        auth.allow_insecure = False  # plain http to loopback is no longer allowed
        with pytest.raises(InsecureTransport):
            client.get(served.url + "/fixed")
        auth.allow_insecure = True
        payer.policy = SpendingPolicy(max_amount_per_unit=10)  # 1000 per request: refused
        with pytest.raises(PolicyViolation):
            client.get(served.url + "/fixed")
    assert served.seen.requests == [("GET", "/fixed", False, 402)] * 2  # nothing signed/sent


def test_amb_05_body_bound_challenge_refreshed_with_head(served: Served, env: Env) -> None:
    """CORE-13: a digest-bound challenge only fits its own body; another body gets a
    digest-free challenge from one HEAD, then every body pays on its first attempt."""
    auth = PaymentAuth(env.payer_for(), allow_insecure=True, deposit=10_000)
    with httpx.Client(auth=auth) as client:
        assert client.post(served.url + "/fixed", content=b'{"a": 1}').status_code == 200
        served.seen.requests.clear()
        bodies = [b'{"a": 2}', b'{"a": 3}', b'{"a": 4}']
        answers = [client.post(served.url + "/fixed", content=b) for b in bodies]
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert served.seen.requests == [
        ("HEAD", "/fixed", False, 402),
        ("POST", "/fixed", True, 200),
        ("POST", "/fixed", True, 200),
        ("POST", "/fixed", True, 200),
    ]
    assert [_spent(r) for r in answers] == [2_000, 3_000, 4_000]


def test_ses_04_drained_channel_is_not_paid_ahead(served: Served, env: Env) -> None:
    auth = PaymentAuth(env.payer_for(), allow_insecure=True, deposit=1_500)
    with httpx.Client(auth=auth) as client:
        first = client.get(served.url + "/fixed")
        served.seen.requests.clear()
        second = client.get(served.url + "/fixed")  # 500 left < 1000: a new channel
    assert first.status_code == second.status_code == 200
    assert served.seen.paid_path("/fixed") == [("GET", False, 402), ("GET", True, 200)]
    ids = {
        parse_receipt(r.headers["payment-receipt"]).to_json()["channelId"] for r in (first, second)
    }
    assert len(ids) == 2


def test_power_loss_resync_stale_record_sets_channel_aside(served: Served, env: Env) -> None:
    """A record rolled back (WAL+NORMAL power loss): the server holds more than we recorded.
    The stale-voucher answer sets the channel aside and a new one is opened; nothing is
    signed on the old channel from the rolled-back record again."""
    payer = env.payer_for()
    auth = PaymentAuth(payer, allow_insecure=True, deposit=10_000, prepay_units=0)
    with httpx.Client(auth=auth) as client:
        first = client.get(served.url + "/fixed")
        cid = parse_receipt(first.headers["payment-receipt"]).to_json()["channelId"]
        before = payer.channel(cid)  # cumulative 1000, spent 1000
        assert client.get(served.url + "/fixed").status_code == 200
        assert client.get(served.url + "/fixed").status_code == 200  # the server holds 3000
        assert before is not None
        payer.records.update(cid, lambda r: before)  # what a power loss could leave behind
        served.seen.requests.clear()
        r = client.get(served.url + "/fixed")
    assert r.status_code == 200
    assert parse_receipt(r.headers["payment-receipt"]).to_json()["channelId"] != cid
    old = payer.channel(cid)
    assert old is not None and old.status == "stale"
    assert [p for _, p, s in served.seen.paid_path("/fixed")] == [True, True]


# --- a metered JSON answer: charged in full before its first byte ------------------------------


def json_metered_app(gate: PaymentGate, n: int) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        meter = get_meter(scope)
        ok = True
        for _ in range(n):
            if not await meter.charge(1):
                ok = False
                break
        status = 200 if ok else 402  # the middleware answers the 402 when the meter ran dry
        body = json.dumps({"units": meter.units}).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return PaymentMiddleware(app, gate)


def test_ses_27_first_ever_json_request_tops_up_the_channel_it_opened(env: Env) -> None:
    """The inference helper's bug: the open voucher covers one unit, the JSON answer needs 30;
    the retry used to open a second channel (the first was still "pending") and got 402
    again. Now it vouchers the channel it just opened."""
    seen = Seen()
    gate = PaymentGate(env.engine(), env.issuer(), [Route("/json", PER_TOKEN)], failure_rate=None)
    server = ServerThread(spy(json_metered_app(gate, 30), seen)).start()
    try:
        payer = env.payer_for()
        auth = PaymentAuth(payer, allow_insecure=True, deposit=2_000, prepay_units=20)
        with httpx.Client(auth=auth) as client:
            r = client.post(server.url + "/json", content=b'{"q": 1}')
            assert r.status_code == 200, r.text
            again = client.post(server.url + "/json", content=b'{"q": 1}')
    finally:
        server.stop()
    assert again.status_code == 200 and again.json() == {"units": 30}
    ids = {parse_receipt(x.headers["payment-receipt"]).to_json()["channelId"] for x in (r, again)}
    assert len(ids) == 1
    channels = payer.records.all()  # type: ignore[attr-defined]
    assert len(channels) == 1  # never a second open
    # unpaid → open (ran dry: 402) → voucher on the same channel → 200; then the second
    # request pays ahead (and, its 30 units being above the prepay window, falls back once)
    assert seen.paid_path("/json")[:3] == [
        ("POST", False, 402),
        ("POST", True, 402),
        ("POST", True, 200),
    ]
    assert all(paid for _, paid, _ in seen.paid_path("/json")[3:])


# --- pipelined prepay ------------------------------------------------------------------------


def slow_stream_app(gate: PaymentGate, delay: float) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        n = int(scope["query_string"].decode().split("=")[1])
        meter = get_meter(scope)
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i in range(n):
            if not await meter.charge(1):
                break
            body = f"data: {i}\n\n".encode()
            await send({"type": "http.response.body", "body": body, "more_body": True})
            if delay:
                await asyncio.sleep(delay)
        await send({"type": "http.response.body", "body": b""})

    return PaymentMiddleware(app, gate, reserve_units=10)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_ses_31_prepay_vouchers_keep_a_slow_stream_flowing(env: Env, mode: str) -> None:
    """Prepay every 100 units, the stream slower than a voucher round trip: not one
    need-voucher pause (the first prepay voucher goes out right after the headers)."""
    seen = Seen()
    price = Price(amount=10, unit_type="llm_token", suggested_deposit=2_000)
    gate = PaymentGate(env.engine(), env.issuer(), [Route("/s", price)], failure_rate=None)
    server = ServerThread(spy(slow_stream_app(gate, 0.002), seen)).start()
    url = server.url + "/s?n=600"
    try:
        auth = PaymentAuth(env.payer_for(), allow_insecure=True, deposit=50_000, prepay_units=100)
        if mode == "sync":
            with httpx.Client(auth=auth, timeout=30) as client:
                with client.stream("GET", url) as r:
                    body = r.read()
                    receipts = list(r.extensions[RECEIPTS_KEY])
        else:
            async with httpx.AsyncClient(auth=auth, timeout=30) as aclient:
                async with aclient.stream("GET", url) as r:
                    body = await r.aread()
                    receipts = list(r.extensions[RECEIPTS_KEY])
    finally:
        server.stop()
    assert body.count(b"data: ") == 600 and b"payment-" not in body
    final = final_receipt(receipts)
    assert final["units"] == 600 and final["spent"] == "6000"
    assert seen.need_vouchers == 0


async def test_ses_31_fast_stream_pipelines_vouchers_and_ends_exact(env: Env) -> None:
    """A stream faster than the voucher round trip: several vouchers on the wire, out-of-order
    stale answers are harmless, every unit is delivered and charged once."""
    seen = Seen()
    gate = PaymentGate(env.engine(), env.issuer(), [Route("/s", PER_TOKEN)], failure_rate=None)
    server = ServerThread(spy(slow_stream_app(gate, 0), seen)).start()
    try:
        auth = PaymentAuth(env.payer_for(), allow_insecure=True, deposit=100_000, prepay_units=20)
        async with httpx.AsyncClient(auth=auth, timeout=30) as client:
            async with client.stream("GET", server.url + "/s?n=2000") as r:
                body = await r.aread()
                final = final_receipt(r.extensions[RECEIPTS_KEY])
        with httpx.Client(auth=auth, timeout=30) as sclient:
            with sclient.stream("GET", server.url + "/s?n=2000") as r:
                body2 = r.read()
                final2 = final_receipt(r.extensions[RECEIPTS_KEY])
    finally:
        server.stop()
    assert body.count(b"data: ") == body2.count(b"data: ") == 2000
    assert final["spent"] == "20000" and final2["spent"] == "40000"
    assert final["channelId"] == final2["channelId"]
