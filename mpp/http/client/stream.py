"""Client side of a paid stream: strip payment events, answer need-voucher, collect receipts.

The body wrapper replaces `response.stream` below the caller (and below SDKs such as openai,
which would choke on unknown events), so what the caller reads is the server's body minus the
`payment-need-voucher` / `payment-receipt` events, byte for byte otherwise.

`PaidStream` is the one implementation for httpx.Client and httpx.AsyncClient: the reader feeds
it chunks and it only does pure work on the reader (the event filter, the stream budget, the
prepay-ahead estimate, mpp.session.ahead); everything that signs, writes the payer's records or
sends a request runs in the stream's own worker threads, so neither a sync reader nor an event
loop waits for it. Vouchers go ahead in the background, several on the wire when the stream is
faster than a voucher round trip; a need-voucher (SES-31) is answered in event order, after a
topUp on chain when `requiredCumulative > deposit`, on its own request to the same URI (SES-34).
When the body ends, the stream waits for its workers and then records the receipt events it
read, so the final receipt is the latest one when the caller's read returns.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from types import ModuleType
from typing import Any

import anyio.to_thread
import httpx

from mpp.core.amounts import decimal_amount
from mpp.http.client.exchange import PaidExchange
from mpp.http.sse import NEED_VOUCHER, RECEIPT, PaymentEvent, PaymentEventFilter
from mpp.session.ahead import MAX_IN_FLIGHT, Ahead, plan_need
from mpp.session.budget import ServerOverreach
from mpp.session.payer import PayerError
from mpp.session.receipts import NeedVoucher

__all__ = ["AsyncPaidBody", "PaidStream", "SyncPaidBody"]

log = logging.getLogger(__name__)


class PaidStream:
    """The payment side of one event-stream response (thread-safe)."""

    def __init__(self, exchange: PaidExchange) -> None:
        ex = self._ex = exchange
        self._filter = PaymentEventFilter()
        self._cond = threading.Condition()  # guards the budget and _ahead
        self._ahead = Ahead(ex.unit_price, ex.budget, ex.window, ex.paying.prepay_units)
        last = ex.receipts[-1] if ex.receipts else {}
        accepted, spent = last.get("acceptedCumulative"), last.get("spent")
        self._ahead.start(decimal_amount(accepted), decimal_amount(spent))
        # Constructed where the response is taken over: in a worker thread for async clients.
        self._ahead.deposit = ex.paying.deposit_of(ex.channel_id)
        self._serial: deque[Callable[[], None]] = deque()  # need-voucher answers, in order
        self._receipts: list[dict[str, object]] = []  # receipt events, recorded by finish()
        self._draining = False
        self._pool: ThreadPoolExecutor | None = None
        self._work: set[Future[None]] = set()
        self._closed = False
        self.refused: ServerOverreach | None = None

    # --- the reader (pure work only) ------------------------------------------------------------

    def feed(self, chunk: bytes) -> bytes:
        """What the caller reads of `chunk`; raises ServerOverreach to end the stream."""
        clean, events = self._filter.feed(chunk)
        content = clean.count(b"\n\n") if clean else 0
        nxt = None
        with self._cond:  # once per chunk in the common case: content, no payment events
            self._ex.budget.delivered(content)
            if content and not events:
                nxt = self._ahead.seen(content, time.monotonic())
        if events:
            for event in events:
                self._on_event(event)
            if content:
                with self._cond:
                    nxt = self._ahead.seen(content, time.monotonic())
        if self.refused is not None:
            raise self.refused
        if nxt is not None:  # signed and sent by a worker; reading goes on
            self._spawn(functools.partial(self._prepay, nxt))
        return clean

    def flush(self) -> bytes:
        """The body ended: what is left for the caller (a trailing unterminated event)."""
        clean, events = self._filter.flush()
        for event in events:
            self._on_event(event)
        return clean

    def _on_event(self, event: PaymentEvent) -> None:
        if event.event == RECEIPT:
            with self._cond:  # recorded by finish(), after the voucher answers it covers
                self._receipts.append(dict(event.data))
            return
        if event.event != NEED_VOUCHER:
            return
        try:
            need = NeedVoucher.parse(event.data)
        except ValueError:
            log.warning("ignored a malformed payment-need-voucher event")
            return
        with self._cond:
            answer = self._ex.budget.asked(need.required_cumulative)  # may raise ServerOverreach
        if answer:
            self._serially(functools.partial(self._answer, need))

    # --- workers ---------------------------------------------------------------------------------

    def _spawn(self, work: Callable[[], None]) -> None:
        with self._cond:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(MAX_IN_FLIGHT + 1, thread_name_prefix="mpp-pay")
            future = self._pool.submit(work)
            self._work.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future[None]) -> None:
        with self._cond:
            self._work.discard(future)

    def _serially(self, work: Callable[[], None]) -> None:
        """Run `work` after what was queued before it (one worker at a time)."""
        with self._cond:
            self._serial.append(work)
            if self._draining:
                return
            self._draining = True
        self._spawn(self._drain)

    def _drain(self) -> None:
        while True:
            with self._cond:
                if not self._serial:
                    self._draining = False
                    return
                work = self._serial.popleft()
            try:
                work()
            except Exception:  # a bug of ours: logged, the stream and its payer carry on
                log.exception("paid stream work failed")

    def _prepay(self, cumulative: int) -> None:
        ok = False
        sent = time.monotonic()
        try:
            self._ex.paying.send_voucher(self._ex, self._ex.channel_id, cumulative)
            ok = True
        except (PayerError, httpx.HTTPError) as exc:
            log.info("prepay-ahead voucher not sent: %s", type(exc).__name__)
        finally:
            with self._cond:
                self._ahead.done(cumulative, ok, time.monotonic() - sent)
                self._cond.notify_all()

    def _answer(self, need: NeedVoucher) -> None:
        ex, required = self._ex, need.required_cumulative
        try:
            with self._cond:  # a voucher on the wire may cover it: let it land first
                self._cond.wait_for(
                    lambda: (
                        self._closed or self._ahead.in_flight == 0 or self._ahead.covered(required)
                    ),
                    timeout=ex.paying.timeout,
                )
                if self._closed or self._ahead.covered(required):
                    return
                self._ahead.ran_dry(required)
            deposit = ex.paying.deposit_of(ex.channel_id)
            if deposit is None:
                raise PayerError("unknown channel")
            with self._cond:
                lead = self._ahead.lead_units() * ex.unit_price
                plan = plan_need(
                    need,
                    channel_id=ex.channel_id,
                    budget=ex.budget,
                    lead=lead,
                    deposit=deposit,
                    topup_amount=ex.paying.topup_amount,
                )
            if plan.topup:
                ex.paying.topup(ex, ex.channel_id, plan.topup)
                deposit = ex.paying.deposit_of(ex.channel_id)
                with self._cond:
                    self._ahead.deposit = deposit
            ex.paying.send_voucher(ex, ex.channel_id, plan.target)
            with self._cond:
                self._ahead.answered(required, plan.target)
        except ServerOverreach as exc:
            self.refused = exc  # nothing signed; the reader ends the stream
        except (PayerError, ValueError, httpx.HTTPError) as exc:
            # The server ends the stream after its timeout; the caller still gets what came.
            log.warning("could not answer payment-need-voucher: %s", type(exc).__name__)

    def finish(self) -> None:
        """The body ended or the caller closed it: waiting answers give up, vouchers on the wire
        land, receipts are recorded. Then the workers stop."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            pool = self._pool
        while True:
            with self._cond:
                work = list(self._work)
            if not work:
                break
            wait_all(work)
        if pool is not None:
            pool.shutdown(wait=True)
        with self._cond:
            receipts, self._receipts = self._receipts, []
        for receipt in receipts:  # the stream's own receipts last: its final one is the latest
            self._ex.add_receipt(receipt)


def paid_body(stream: Any, exchange: PaidExchange, lib: ModuleType) -> Any:
    """`stream` (a response body of `lib`, httpx or httpx2) with its payment handled."""
    sync_body, async_body = (SyncPaidBody, AsyncPaidBody) if lib is httpx else _bodies_of(lib)
    if isinstance(stream, lib.AsyncByteStream):
        return async_body(stream, exchange)
    return sync_body(stream, exchange) if isinstance(stream, lib.SyncByteStream) else stream


@functools.cache
def _bodies_of(lib: ModuleType) -> tuple[type[SyncPaidBody], type[AsyncPaidBody]]:
    """The same bodies, also of `lib`'s stream classes (a response checks `isinstance`)."""
    sync_body = type("SyncPaidBody", (SyncPaidBody, lib.SyncByteStream), {})
    async_body = type("AsyncPaidBody", (AsyncPaidBody, lib.AsyncByteStream), {})
    return sync_body, async_body


class SyncPaidBody(httpx.SyncByteStream):
    """`PaidStream` under httpx.Client."""

    def __init__(self, inner: Any, exchange: PaidExchange) -> None:
        self._inner = inner
        self._paid = PaidStream(exchange)

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            clean = self._paid.feed(chunk)
            if clean:
                yield clean
        clean = self._paid.flush()
        self._paid.finish()
        if self._paid.refused is not None:
            raise self._paid.refused
        if clean:
            yield clean

    def close(self) -> None:
        self._paid.finish()
        self._inner.close()


class AsyncPaidBody(httpx.AsyncByteStream):
    """`PaidStream` under httpx.AsyncClient: waiting for its workers happens off the loop."""

    def __init__(self, inner: Any, exchange: PaidExchange) -> None:
        self._inner = inner
        self._paid = PaidStream(exchange)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            clean = self._paid.feed(chunk)
            if clean:
                yield clean
        clean = self._paid.flush()
        await anyio.to_thread.run_sync(self._paid.finish)
        if self._paid.refused is not None:
            raise self._paid.refused
        if clean:
            yield clean

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self._paid.finish)
        await self._inner.aclose()
