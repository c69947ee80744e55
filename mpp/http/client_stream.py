"""Client side of a paid stream: strip payment events, answer need-voucher, collect receipts.

The wrapper replaces `response.stream` below the caller (and below SDKs such as openai, which
would choke on unknown events), so what the caller reads is the server's body minus the
`payment-need-voucher` / `payment-receipt` events, byte for byte otherwise. A need-voucher
event makes the client top up on chain first when `requiredCumulative > deposit`, then sign a
voucher (plus `prepay` beyond the need) and send it on a separate request to the same URI
(SES-31/34); the async stream keeps reading meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx

from mpp.http.sse import NEED_VOUCHER, RECEIPT, PaymentEvent, PaymentEventFilter
from mpp.session.payer import DepositExhausted, PayerError

if TYPE_CHECKING:
    from mpp.http.client_auth import PaidExchange

log = logging.getLogger(__name__)


def _int(data: dict[str, Any], name: str) -> int:
    value = data.get(name)
    if not isinstance(value, str) or not value.isdigit() or len(value) > 39:
        raise ValueError(f"need-voucher field {name} is not a decimal string")
    return int(value)


class Ahead:
    """Prepay-ahead: estimate the server's position from the events received since the last
    need-voucher (one unit per event, the LLM-token case) and send the next voucher while
    `prepay/2` units of the last one are left, so a long stream need not pause at every voucher.
    """

    def __init__(self, exchange: PaidExchange) -> None:
        self.ex = exchange
        self.target = 0  # cumulative amount of the last voucher we sent
        self.position = 0  # estimated server spent
        self.busy = False

    def answered(self, required: int, target: int) -> None:
        self.position, self.target = required, max(self.target, target)

    def seen(self, clean: bytes) -> int | None:
        """Count delivered events; the next cumulative to sign now, or None."""
        prepay = self.ex.auth.prepay_units * self.ex.unit_price
        if not prepay or not self.target:
            return None
        self.position += clean.count(b"\n\n") * self.ex.unit_price
        if self.busy or self.target - self.position >= prepay:
            return None
        return self.position + 2 * prepay  # keep `prepay` authorized ahead, one voucher per N

    def stale(self, required: int) -> bool:
        """A need-voucher the server sent before our last voucher arrived: nothing to do."""
        return bool(self.target) and required <= self.target


def plan_voucher(exchange: PaidExchange, event: PaymentEvent) -> tuple[str, int, int]:
    """(channel id, cumulative to sign, top-up needed first) for a need-voucher event."""
    cid = str(event.data.get("channelId", "")).lower()
    if cid != exchange.channel_id:
        raise PayerError("need-voucher for a channel this request did not pay with")
    required = _int(event.data, "requiredCumulative")
    rec = exchange.auth.payer.channel(cid)
    if rec is None:
        raise PayerError("unknown channel")
    target = required + exchange.auth.prepay_units * exchange.unit_price
    deposit = max(rec.deposit, _int(event.data, "deposit"))
    topup = 0
    if required > deposit:  # SES-31: MUST top up first
        topup = max(exchange.auth.topup_amount or 0, target - deposit)
    elif target > deposit:
        target = deposit  # prepay only what the deposit allows
    return cid, target, topup


class PaidSyncStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, exchange: PaidExchange) -> None:
        self._inner = inner
        self._exchange = exchange
        self._ahead = Ahead(exchange)
        self._pool: ThreadPoolExecutor | None = None

    def __iter__(self) -> Iterator[bytes]:
        filt = PaymentEventFilter()
        for chunk in self._inner:
            clean, events = filt.feed(chunk)
            for event in events:
                self._on_event(event)
            if clean:
                nxt = self._ahead.seen(clean)
                if nxt is not None:
                    self._ahead.busy = True  # one voucher in flight; reading goes on
                    if self._pool is None:
                        self._pool = ThreadPoolExecutor(1, thread_name_prefix="mpp-voucher")
                    self._pool.submit(self._prepay, nxt)
                yield clean
        clean, events = filt.flush()
        for event in events:
            self._on_event(event)
        if clean:
            yield clean

    def _on_event(self, event: PaymentEvent) -> None:
        ex = self._exchange
        if event.event == RECEIPT:
            ex.add_receipt(event.data)
            return
        if event.event != NEED_VOUCHER:
            return
        try:
            if self._ahead.stale(_int(event.data, "requiredCumulative")):
                return
            cid, target, topup = plan_voucher(ex, event)
            if topup:
                ex.auth.topup_sync(ex, cid, topup)
            ex.auth.send_voucher_sync(ex, cid, target)
            self._ahead.answered(_int(event.data, "requiredCumulative"), target)
        except (PayerError, ValueError, httpx.HTTPError) as exc:
            # The server ends the stream after its timeout; the caller still gets what came.
            log.warning("could not answer payment-need-voucher: %s", type(exc).__name__)

    def _prepay(self, cumulative: int) -> None:
        ex = self._exchange
        rec = ex.auth.payer.channel(ex.channel_id)
        if rec is None or cumulative > rec.deposit:
            self._ahead.target = 0  # the deposit is the limit: wait for need-voucher
            return
        try:
            ex.auth.send_voucher_sync(ex, ex.channel_id, cumulative)
            self._ahead.target = max(self._ahead.target, cumulative)
        except (PayerError, httpx.HTTPError) as exc:
            self._ahead.target = 0
            log.info("prepay-ahead voucher not sent: %s", type(exc).__name__)
        finally:
            self._ahead.busy = False

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._inner.close()


class PaidAsyncStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, exchange: PaidExchange) -> None:
        self._inner = inner
        self._exchange = exchange
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()  # one voucher at a time, in event order
        self._ahead = Ahead(exchange)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        filt = PaymentEventFilter()
        async for chunk in self._inner:
            clean, events = filt.feed(chunk)
            for event in events:
                self._on_event(event)
            if clean:
                nxt = self._ahead.seen(clean)
                if nxt is not None:
                    self._ahead.busy = True
                    self._spawn(self._prepay(nxt))
                yield clean
        clean, events = filt.flush()
        for event in events:
            self._on_event(event)
        if clean:
            yield clean

    def _on_event(self, event: PaymentEvent) -> None:
        if event.event == RECEIPT:
            self._exchange.add_receipt(event.data)
        elif event.event == NEED_VOUCHER:
            self._spawn(self._answer(event))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _prepay(self, cumulative: int) -> None:
        ex = self._exchange
        self._ahead.busy = True
        try:
            async with self._lock:
                rec = ex.auth.payer.channel(ex.channel_id)
                if rec is None or cumulative > rec.deposit:
                    self._ahead.target = 0
                    return
                await ex.auth.send_voucher_async(ex, ex.channel_id, cumulative)
                self._ahead.target = max(self._ahead.target, cumulative)
        except (PayerError, httpx.HTTPError) as exc:
            self._ahead.target = 0
            log.info("prepay-ahead voucher not sent: %s", type(exc).__name__)
        finally:
            self._ahead.busy = False

    async def _answer(self, event: PaymentEvent) -> None:
        ex = self._exchange
        async with self._lock:
            try:
                if self._ahead.stale(_int(event.data, "requiredCumulative")):
                    return
                cid, target, topup = plan_voucher(ex, event)
                if topup:
                    await ex.auth.topup_async(ex, cid, topup)
                await ex.auth.send_voucher_async(ex, cid, target)
                self._ahead.answered(_int(event.data, "requiredCumulative"), target)
            except (PayerError, DepositExhausted, ValueError, httpx.HTTPError) as exc:
                log.warning("could not answer payment-need-voucher: %s", type(exc).__name__)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self._inner.aclose()
