"""ASGI middleware over PaymentGate, and the Meter a metered handler charges through.

Plain ASGI (`(scope, receive, send)`), so it runs standalone, under Starlette and in FastAPI.
Per paid request: 402 challenges, management answers (voucher-only HEAD / bodyless POST, topUp,
close) without calling the app, receipts in the headers of every 2xx (CORE-32/35, SES-32) and,
for event streams, a final `payment-receipt` event. A metered handler calls
`await meter.charge(units)` before it sends each unit; when the balance runs out the stream gets
one `payment-need-voucher` event and pauses until a voucher for the channel is accepted by any
request (VoucherWaiters, and through a store's voucher feed any server process), or ends
cleanly after `voucher_timeout` (SES-31). A new event stream on a channel ends the previous one
of this process (SES-34). `Idempotency-Key` (CORE-47/SES-29): see mpp.http.server.idempotency.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from mpp.core.errors import PaymentError
from mpp.core.http import receipt_cache_control
from mpp.http.server.answers import Answer, money_headers, plain_problem, receipt_header
from mpp.http.server.body import ClientDisconnected, read_body, replay_body
from mpp.http.server.charge import ChargePending
from mpp.http.server.gate import IdempotencyKey, Paid, PaymentGate
from mpp.http.server.idempotency import StoredResponse, fingerprint, valid_key
from mpp.http.server.lanes import LaneBusy, WorkLanes
from mpp.http.server.meter import SCOPE_KEY, Meter
from mpp.http.server.routes import RequestInfo
from mpp.http.server.waiters import VoucherWaiters
from mpp.http.sse import RECEIPT, format_event, is_event_stream
from mpp.session.scheme import FinalReceiptSlot

log = logging.getLogger(__name__)
T = TypeVar("T")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

IDEMPOTENT_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_BODY = 16 * 1024 * 1024


class PaymentMiddleware:
    """`PaymentMiddleware(app, gate)`; Starlette: `Middleware(PaymentMiddleware, gate=gate)`."""

    def __init__(
        self,
        app: ASGIApp,
        gate: PaymentGate,
        *,
        voucher_timeout: float = 60.0,
        reserve_units: int | None = None,
        waiters: VoucherWaiters | None = None,
    ) -> None:
        self.app = app
        self.gate = gate
        self.voucher_timeout = voucher_timeout
        # Metered units reserved per store write: None = all the payer authorized (one write
        # per voucher in steady state; a crash over-charges at most that one window).
        self.reserve_units = None if reserve_units is None else max(1, reserve_units)
        self.pauses = 0  # metered streams that ran dry and waited for a voucher
        self.waiters = waiters or VoucherWaiters()
        self.lanes = WorkLanes()  # where engine work runs (mpp.http.server.lanes)
        self._feed = False  # the store's voucher feed is attached (or absent)
        self._streams: dict[str, int] = {}  # SES-34: channel → its newest stream's number
        self._stream_numbers = itertools.count(1)
        self.draining = False  # shutting down: streams end with their receipts, no new ones

    def drain(self) -> None:
        """Graceful shutdown, step one: metered streams stop at their next unit and end cleanly
        with their final receipt (paused ones are woken); new paid requests get 503."""
        self.draining = True
        self.waiters.wake(None)

    def paused(self, channel_id: str) -> None:
        """A metered stream ran out of authorization and waits for a voucher."""
        self.pauses += 1
        self.gate.observer.paused(channel_id)
        log.info("stream on %s paused for a voucher (%d pauses so far)", channel_id, self.pauses)

    def begin_stream(self, channel_id: str) -> int:
        """SES-34: a new stream on `channel_id` supersedes the previous one of this process;
        wake it if it is paused so it ends now. (Across processes the older one ends on its
        own: it runs dry or times out.)"""
        number = next(self._stream_numbers)
        if channel_id in self._streams:
            self.waiters.notify(channel_id)
        self._streams[channel_id] = number
        self.gate.observer.stream_started(channel_id)
        return number

    def current_stream(self, channel_id: str) -> int | None:
        return self._streams.get(channel_id)

    def end_stream(self, channel_id: str, number: int) -> None:
        if number:  # a stream that begin_stream numbered, superseded or not
            self.gate.observer.stream_ended(channel_id)
        if number and self._streams.get(channel_id) == number:
            del self._streams[channel_id]

    async def _attach_feed(self) -> None:
        self._feed = True
        try:
            await self.waiters.attach(self.gate.engine.store)
        except Exception:  # no feed: streams still wake in-process and time out otherwise
            log.warning("voucher feed unavailable; cross-process wake-ups disabled")

    async def run_fast(self, work: Callable[[], T]) -> T:
        """Store-only engine work on a known channel: the paying lane (mpp.http.server.lanes)."""
        return await self.lanes.paying(work)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.gate.route_for(scope.get("path", "")) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        if self.draining:
            await _send_answer(send, _shutting_down())
            return
        try:
            body = await read_body(receive, MAX_BODY)
        except ClientDisconnected:
            return  # half a request: nothing to verify, charge or answer
        if body is None:
            await _send_answer(send, Answer(413, (("content-length", "0"),)))
            return
        method = str(scope.get("method", "GET")).upper()
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        client = scope.get("client")
        peer = str(client[0]) if client else ""
        info = RequestInfo(method, scope.get("path", ""), headers, body, peer)
        receive = replay_body(body, receive)
        pending = self.gate.prepare(route, info)
        if pending is None:  # let through unpaid: a Meter that never charges, never emits
            await self.app({**scope, SCOPE_KEY: Meter()}, receive, send)
            return
        if isinstance(pending, Answer):
            await _send_answer(send, pending)
            return
        if isinstance(pending, ChargePending):
            await self._charged(scope, receive, send, info, pending)
            return
        if not self._feed:
            await self._attach_feed()
        key = info.header("idempotency-key")
        idem = None
        if not pending.management and method in IDEMPOTENT_METHODS and key and valid_key(key):
            query = bytes(scope.get("query_string", b""))
            idem = IdempotencyKey(key, fingerprint(method, info.path, query, body))

        def work() -> Paid | Answer:
            return self.gate.execute(
                pending, info, idempotency=idem, reserve_units=self.reserve_units
            )  # None: a metered request reserves all that its voucher authorized

        if pending.action == "voucher" and not self.lanes.knows(pending.channel_id):
            limited = self.gate.over_failure_rate(pending, info)
            if limited is not None:
                await _send_answer(send, limited)
                return
        try:
            if pending.action == "voucher":
                outcome = await self.lanes.voucher(pending.channel_id, work)
            else:
                outcome = await anyio.to_thread.run_sync(work)
        except LaneBusy:
            await _send_answer(send, _busy())
            return
        if isinstance(outcome, Answer):
            if outcome.status < 300 and pending.action in ("voucher", "topUp", "open"):
                self.lanes.learn(pending.channel_id)
                self.waiters.notify(pending.channel_id)
            await _send_answer(send, outcome)
            return
        self.lanes.learn(outcome.channel_id)
        if pending.action in ("voucher", "topUp", "open"):
            self.waiters.notify(pending.channel_id)
        if outcome.replay is not None:  # CORE-47/SES-29: no handler, no charge
            stored = outcome.replay
            await _send_answer(send, Answer(stored.status, stored.headers, stored.body))
            return
        await self._serve(scope, receive, send, info, outcome)

    async def _charged(
        self, scope: Scope, receive: Receive, send: Send, info: RequestInfo, pending: ChargePending
    ) -> None:
        """tempo/charge: the payment is taken before the handler runs (CHG-02/03); a 2xx
        carries its receipt (CHG-11), anything else none."""
        charge = self.gate.charge
        assert charge is not None
        try:
            charged = await anyio.to_thread.run_sync(charge.execute, pending)
        except PaymentError as exc:
            await _send_answer(send, self.gate.refuse(exc, pending.route, info))
            return
        except (ValueError, TypeError, KeyError):  # our bug, not the payer's: logged, 500
            log.exception("charge credential handling failed")
            detail = "internal error while handling the payment"
            await _send_answer(send, plain_problem(500, detail, info.path))
            return
        receipt = receipt_header(charged.receipt).encode("latin-1")
        money = [(k.encode(), v.encode()) for k, v in money_headers(charged.receipt)]
        ours = {b"payment-receipt", b"cache-control", *(k for k, _ in money)}

        async def with_receipt(message: Message) -> None:
            if message["type"] == "http.response.start" and 200 <= message["status"] < 300:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in ours]
                given = _get([(k.decode("latin-1").lower(), v.decode("latin-1"))
                              for k, v in message.get("headers", [])], "cache-control")  # fmt: skip
                headers += [
                    (b"payment-receipt", receipt),
                    (b"cache-control", receipt_cache_control(given).encode("latin-1")),
                    *money,
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app({**scope, SCOPE_KEY: Meter()}, receive, with_receipt)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        info: RequestInfo,
        paid: Paid,
    ) -> None:
        gate = self.gate
        keep = paid.idempotency is not None
        captured: list[bytes] = []
        slot = FinalReceiptSlot()  # SES-32: the final receipt goes before a trailing [DONE]
        start: dict[str, Any] = {}
        closed = False

        async def emit(chunk: bytes) -> bool:
            if closed:
                return False
            try:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except OSError:
                return False
            if keep:
                captured.append(chunk)
            return True

        meter = Meter(self, paid, emit)

        async def wrapped(message: Message) -> None:
            nonlocal closed
            kind = message["type"]
            if kind == "http.response.start":
                await self._start(message, meter, paid, start, send)
                return
            if kind == "http.response.body" and start.get("drop"):
                return
            if kind == "http.response.body" and meter.event_stream and start.get("paid_2xx"):
                given = bytes(message.get("body", b""))
                if message.get("more_body", False):
                    # A trailing `data: [DONE]` waits for the next chunk (mpp.session.scheme).
                    body = slot.feed(given)
                    if not body:
                        return
                else:
                    await meter.settle_reservation()  # RECEIPTED: the final receipt follows
                    final = gate.receipt(paid, meter.state, meter.units or None, meter.cost)
                    await emit(format_event(RECEIPT, final))  # SES-32
                    body = slot.end(given)  # after the receipt: a held [DONE], the last chunk
                if body is not given:
                    message = {**message, "body": body}
            if kind == "http.response.body" and not message.get("more_body", False):
                closed = True
            if keep and kind == "http.response.body":
                captured.append(bytes(message.get("body", b"")))
            await send(message)

        finished = False

        async def finish() -> None:
            nonlocal finished
            if finished:
                return
            finished = True
            self.end_stream(paid.channel_id, meter.generation)
            await meter.settle_reservation()
            with anyio.CancelScope(shield=True):
                if start.get("paid_2xx") and paid.idempotency is not None:
                    # A 2xx was (at least partly) delivered and paid: that is the response a
                    # duplicate gets, even if the handler failed halfway.
                    stored = StoredResponse(
                        int(start["status"]),
                        tuple(start.get("headers", ())),
                        b"".join(captured),
                        paid.idempotency.fingerprint,
                    )
                    await self.run_fast(lambda: gate.complete(paid, stored))
                if paid.charged or paid.idempotency is not None:
                    # No 2xx started (error status, 402, the handler raised): the fixed price
                    # goes back and the key is freed for a retry.
                    await self.run_fast(lambda: gate.abandon(paid))

        try:
            await self.app({**scope, SCOPE_KEY: meter}, receive, wrapped)
            if start.get("drop"):  # ran dry before the response started: 402, not a stream
                assert meter.insufficient is not None
                # Give back what was used and free the Idempotency-Key BEFORE answering: the
                # client retries at once with the same key and must not find it in progress.
                await finish()
                await _send_answer(send, gate.error(meter.insufficient, paid.route, info))
        finally:
            await finish()

    async def _start(
        self, message: Message, meter: Meter, paid: Paid, start: dict[str, Any], send: Send
    ) -> None:
        status = int(message.get("status", 200))
        if meter.insufficient is not None:
            start["drop"] = True
            start["status"] = 402
            return
        raw = list(message.get("headers", []))
        headers = [(bytes(k).decode("latin-1").lower(), bytes(v).decode("latin-1")) for k, v in raw]
        start["status"] = status
        if not 200 <= status < 300:
            # No receipt on failures (CORE-33); the fixed price goes back, the key is freed.
            await self.run_fast(lambda: self.gate.abandon(paid))
            start["headers"] = headers
            await send(message)
            return
        meter.response_started(is_event_stream(_get(headers, "content-type")))
        if meter.event_stream:
            meter.generation = self.begin_stream(paid.channel_id)
        start["paid_2xx"] = True
        await self.run_fast(lambda: self.gate.delivered(paid))  # the fixed price is delivered
        receipt = self.gate.receipt(paid, meter.state, None, meter.cost)
        cache = receipt_cache_control(_get(headers, "cache-control"))
        money = money_headers(receipt)
        drop = {"cache-control", "payment-receipt", *(k for k, _ in money)}
        if meter.event_stream:
            drop.add("content-length")  # a final receipt event is appended
        headers = [(k, v) for k, v in headers if k not in drop]
        headers += [("payment-receipt", receipt_header(receipt)), ("cache-control", cache), *money]
        start["headers"] = headers
        await send(
            {
                **message,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            }
        )


def _shutting_down() -> Answer:
    return _unavailable(b"the server is shutting down", retry_after=5)


def _busy() -> Answer:
    """The lookup lane is full (mpp.http.server.lanes): try again shortly; nothing was done."""
    return _unavailable(b"too many lookups of unknown channels; retry shortly", retry_after=1)


def _unavailable(detail: bytes, *, retry_after: int) -> Answer:
    body = (
        b'{"type":"about:blank","title":"Service Unavailable","status":503,'
        b'"detail":"' + detail + b'"}'
    )
    headers = (
        ("content-type", "application/problem+json"),
        ("retry-after", str(retry_after)),
        ("content-length", str(len(body))),
    )
    return Answer(503, headers, body)


def _get(headers: list[tuple[str, str]], name: str) -> str | None:
    for k, v in headers:
        if k == name:
            return v
    return None


async def _send_answer(send: Send, answer: Answer) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body, "more_body": False})
