"""ASGI middleware over PaymentGate, and the Meter a metered handler charges through.

Plain ASGI (`(scope, receive, send)`), so it runs standalone, under Starlette and in FastAPI.
Per paid request: 402 challenges, management answers (voucher-only HEAD / bodyless POST, topUp,
close) without calling the app, receipts in the headers of every 2xx (CORE-32/35, SES-32) and,
for event streams, a final `payment-receipt` event. A metered handler calls
`await meter.charge(units)` before it sends each unit; when the balance runs out the stream gets
one `payment-need-voucher` event and pauses until a voucher for the channel is accepted by any
request (VoucherWaiters), or ends cleanly after `voucher_timeout` (SES-31).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from mpp.core.errors import InsufficientBalance, PaymentError
from mpp.core.http import receipt_cache_control
from mpp.http.idempotency import StoredResponse, valid_key
from mpp.http.server_core import (
    Answer,
    Paid,
    PaymentGate,
    Pending,
    RequestInfo,
    receipt_header,
)
from mpp.http.sse import NEED_VOUCHER, RECEIPT, format_event, is_event_stream
from mpp.http.waiters import VoucherWaiters
from mpp.session.ports import ChannelState

log = logging.getLogger(__name__)
T = TypeVar("T")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SCOPE_KEY = "mpp.meter"
IDEMPOTENT_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_BODY = 16 * 1024 * 1024
DONE = b"data: [DONE]\n\n"


class Meter:
    """Charges a paid request's units; a no-op for requests let through unpaid (API keys)."""

    def __init__(
        self,
        middleware: PaymentMiddleware | None = None,
        paid: Paid | None = None,
        emit: Callable[[bytes], Awaitable[bool]] | None = None,
    ) -> None:
        self._mw = middleware
        self.paid = paid
        self._emit = emit
        self.units = 0  # metered units delivered in this request
        self.reserved = 0  # charged in the store, not yet used (released at the end)
        self.insufficient: PaymentError | None = None  # ran dry before the response started
        self.ended = False
        self.started = False
        self.event_stream = False
        self.state: ChannelState | None = paid.result.state if paid else None

    @property
    def is_paid(self) -> bool:
        return self.paid is not None

    @property
    def unit_price(self) -> int:
        return self.paid.route.price.amount if self.paid else 0

    async def charge(self, units: int = 1) -> bool:
        """Pay for `units` before sending them. False: stop, the stream ends cleanly."""
        if units < 0:
            raise ValueError("units must be non-negative")
        if self.paid is None or self._mw is None:
            self.units += units
            return True
        if self.ended:
            return False
        cost = units * self.unit_price
        if cost <= self.reserved:
            self._consume(cost, units)
            return True
        mw, cid = self._mw, self.paid.channel_id
        deadline = time.monotonic() + mw.voucher_timeout
        while True:
            with mw.waiters.subscribe(cid) as sub:  # before the check: no lost wake-up
                short = await self._reserve(cost - self.reserved)
                if short is None:
                    self._consume(cost, units)
                    return True
                if not (self.started and self.event_stream and self._emit):
                    self.insufficient = short  # cannot ask mid-stream: the answer becomes a 402
                    self.ended = True
                    return False
                assert self.state is not None
                event = mw.gate.engine.need_voucher_event(self.state, cost - self.reserved)
                if not await self._emit(format_event(NEED_VOUCHER, event)):
                    self.ended = True
                    return False
                left = deadline - time.monotonic()
                if left <= 0 or not await sub.wait(left):
                    self.ended = True  # SES-31: no voucher in time → end cleanly
                    return False

    def _consume(self, cost: int, units: int) -> None:
        assert self._mw is not None and self.paid is not None
        self.reserved -= cost
        self.units += units
        self._mw.gate.hold(self.paid.channel_id, -cost)

    async def _reserve(self, need: int) -> PaymentError | None:
        """Charge `need` (plus headroom up to `reserve_units`); None on success."""
        assert self._mw is not None and self.paid is not None
        engine, cid = self._mw.gate.engine, self.paid.channel_id
        hint = self.state.available if self.state is not None else 0
        want = max(need, min(self._mw.reserve_units * self.unit_price, hint))

        def run() -> tuple[ChannelState | None, int, PaymentError | None]:
            for amount in dict.fromkeys((want, need)):
                try:
                    return engine.charge(cid, amount), amount, None
                except InsufficientBalance as exc:
                    short: PaymentError = exc
                except PaymentError as exc:
                    return engine.store.get(cid), 0, exc
            return engine.store.get(cid), 0, short

        state, amount, error = await self._mw.run_fast(run)
        if state is not None:
            self.state = state
        if error is not None:
            if not isinstance(error, InsufficientBalance):
                self.ended = True  # finalized / close requested: stop serving (SES-21)
            return error
        self.reserved += amount
        self._mw.gate.hold(cid, amount)
        return None

    async def settle_reservation(self) -> None:
        """Give back what was reserved but not delivered."""
        if self.paid is None or self._mw is None or self.reserved <= 0:
            return
        amount, self.reserved = self.reserved, 0
        gate, cid = self._mw.gate, self.paid.channel_id
        gate.hold(cid, -amount)
        with anyio.CancelScope(shield=True):
            await self._mw.run_fast(lambda: gate.release(cid, amount))
            self.state = await self._mw.run_fast(lambda: gate.engine.store.get(cid)) or self.state


def get_meter(request: Any) -> Meter:
    """The Meter of a request (a Starlette/FastAPI Request or an ASGI scope)."""
    scope = getattr(request, "scope", request)
    meter = scope.get(SCOPE_KEY) if isinstance(scope, MutableMapping) else None
    return meter if isinstance(meter, Meter) else Meter()


class PaymentMiddleware:
    """`PaymentMiddleware(app, gate)`; Starlette: `Middleware(PaymentMiddleware, gate=gate)`."""

    def __init__(
        self,
        app: ASGIApp,
        gate: PaymentGate,
        *,
        voucher_timeout: float = 60.0,
        reserve_units: int = 32,
        waiters: VoucherWaiters | None = None,
    ) -> None:
        self.app = app
        self.gate = gate
        self.voucher_timeout = voucher_timeout
        self.reserve_units = max(1, reserve_units)
        self.waiters = waiters or VoucherWaiters()
        self._fast: anyio.CapacityLimiter | None = None

    async def run_fast(self, work: Callable[[], T]) -> T:
        """Store-only engine work (vouchers, charges) on ONE worker thread: no SQLite lock
        contention (and its millisecond busy-sleeps) between this process's own requests.
        Chain work (open, topUp, close) runs on the default thread pool."""
        if self._fast is None:
            self._fast = anyio.CapacityLimiter(1)
        return await anyio.to_thread.run_sync(work, limiter=self._fast)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.gate.route_for(scope.get("path", "")) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            await _send_answer(send, Answer(413, (("content-length", "0"),)))
            return
        method = str(scope.get("method", "GET")).upper()
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        info = RequestInfo(method, scope.get("path", ""), headers, body)
        receive = _replay(body, receive)
        pending = self.gate.prepare(route, info)
        if pending is None:  # let through unpaid: a Meter that never charges, never emits
            await self.app({**scope, SCOPE_KEY: Meter()}, receive, send)
            return
        if isinstance(pending, Answer):
            await _send_answer(send, pending)
            return
        key = info.header("idempotency-key")
        if pending.management or method not in IDEMPOTENT_METHODS or not valid_key(key):
            key = None
        cache = self.gate.idempotency
        if key is None:
            await self._paid(scope, receive, send, info, pending, None)
            return
        space = cache.scope(pending.channel_id)
        await cache.wait_inflight(space, key)
        with cache.hold(space, key):
            await self._paid(scope, receive, send, info, pending, key)

    async def _paid(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        info: RequestInfo,
        pending: Pending,
        key: str | None,
    ) -> None:
        def work() -> Paid | Answer:
            return self.gate.execute(pending, info, idempotency_key=key)

        if pending.action == "voucher":
            outcome = await self.run_fast(work)
        else:
            outcome = await anyio.to_thread.run_sync(work)
        if isinstance(outcome, Answer):
            if outcome.status < 300 and pending.action in ("voucher", "topUp", "open"):
                self.waiters.notify(pending.channel_id)
            await _send_answer(send, outcome)
            return
        if pending.action in ("voucher", "topUp", "open"):
            self.waiters.notify(pending.channel_id)
        if outcome.replay is not None:
            stored = outcome.replay
            await _send_answer(send, Answer(stored.status, stored.headers, stored.body))
            return
        await self._serve(scope, receive, send, info, outcome, key)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        info: RequestInfo,
        paid: Paid,
        key: str | None,
    ) -> None:
        gate = self.gate
        captured: list[bytes] = []
        held: list[bytes] = []
        start: dict[str, Any] = {}
        closed = False

        async def emit(chunk: bytes) -> bool:
            if closed:
                return False
            try:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except OSError:
                return False
            if key is not None:
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
                body = bytes(message.get("body", b""))
                more = message.get("more_body", False)
                if held and (more or body):  # a [DONE] that turned out not to be the end
                    if not await emit(held.pop()):
                        return
                if more and body.endswith(DONE):
                    # The openai SDK stops reading at `data: [DONE]`: keep it until we know
                    # whether it is the last event, so the final receipt goes before it.
                    cut = len(body) - len(DONE)
                    if cut > 0 and not await emit(body[:cut]):
                        return
                    held.append(DONE)
                    return
                if not more:
                    await meter.settle_reservation()
                    final = gate.receipt(paid, meter.state, meter.units or None)
                    await emit(format_event(RECEIPT, final))  # SES-32
                    while held:
                        await emit(held.pop())
            if kind == "http.response.body" and not message.get("more_body", False):
                closed = True
            if key is not None and kind == "http.response.body":
                captured.append(bytes(message.get("body", b"")))
            await send(message)

        try:
            await self.app({**scope, SCOPE_KEY: meter}, receive, wrapped)
            if start.get("drop"):  # ran dry before the response started: 402, not a stream
                assert meter.insufficient is not None
                await _send_answer(send, gate.error(meter.insufficient, paid.route, info))
        finally:
            await meter.settle_reservation()
        status = int(start.get("status", 500))
        if key is not None and 200 <= status < 300:
            stored = StoredResponse(status, tuple(start.get("headers", ())), b"".join(captured))
            await anyio.to_thread.run_sync(
                gate.idempotency.save, gate.idempotency.scope(paid.channel_id), key, stored
            )

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
            # No receipt on failures (CORE-33), and the fixed price goes back.
            if paid.charged:
                cid, charged = paid.channel_id, paid.charged
                await self.run_fast(lambda: self.gate.release(cid, charged))
                paid.charged = 0
            start["headers"] = headers
            await send(message)
            return
        meter.started = True
        meter.event_stream = is_event_stream(_get(headers, "content-type"))
        start["paid_2xx"] = True
        receipt = self.gate.receipt(paid, meter.state, None)
        cache = receipt_cache_control(_get(headers, "cache-control"))
        drop = {"cache-control", "payment-receipt"}
        if meter.event_stream:
            drop.add("content-length")  # a final receipt event is appended
        headers = [(k, v) for k, v in headers if k not in drop]
        headers += [("payment-receipt", receipt_header(receipt)), ("cache-control", cache)]
        start["headers"] = headers
        await send(
            {
                **message,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            }
        )


def _get(headers: list[tuple[str, str]], name: str) -> str | None:
    for k, v in headers:
        if k == name:
            return v
    return None


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = bytes(message.get("body", b""))
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _send_answer(send: Send, answer: Answer) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body, "more_body": False})
