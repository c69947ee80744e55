"""Client side of a paid stream: strip payment events, answer need-voucher, collect receipts.

The wrapper replaces `response.stream` below the caller (and below SDKs such as openai, which
would choke on unknown events), so what the caller reads is the server's body minus the
`payment-need-voucher` / `payment-receipt` events, byte for byte otherwise. A need-voucher
event makes the client top up on chain first when `requiredCumulative > deposit`, then sign a
voucher (plus the lead beyond the need) and send it on a separate request to the same URI
(SES-31/34); the reader keeps reading meanwhile. Vouchers are also signed and sent ahead in the
background, keeping the lead authorized (bandwidth × delay, mpp.session.window, or the fixed
`prepay_units`), several on the wire when the stream is faster than a voucher round trip
(`Ahead`), so a stream whose payer keeps up never pauses.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import httpx

from mpp.core.amounts import decimal_amount
from mpp.http.sse import NEED_VOUCHER, RECEIPT, PaymentEvent, PaymentEventFilter
from mpp.session.budget import ServerOverreach
from mpp.session.payer import DepositExhausted, PayerError

if TYPE_CHECKING:
    from mpp.http.client_model import PaidExchange

log = logging.getLogger(__name__)


def _int(data: dict[str, Any], name: str) -> int:
    amount = decimal_amount(data.get(name))
    if amount is None:
        raise ValueError(f"need-voucher field {name} is not a decimal string")
    return amount


MAX_IN_FLIGHT = 4  # prepay vouchers on the wire at once, per stream


class Ahead:
    """Prepay-ahead, pipelined: estimate the server's position from the events received (one
    unit per event, the LLM-token case, starting from the header receipt's `spent`) and, each
    time less than the lead (`PaymentAuth.lead_units`: bandwidth × delay by default, or the
    fixed `prepay_units`) is left authorized, sign and send the next voucher (up to
    `position + 2 × lead`, never above the deposit) in the background. `target` counts
    vouchers still on the wire, so when the stream outruns a voucher round trip the next one
    goes out before the previous is answered (up to MAX_IN_FLIGHT): the server never runs dry
    while vouchers arrive faster than it streams. Not thread-safe: the streams lock around it.
    """

    def __init__(self, exchange: PaidExchange) -> None:
        self.ex = exchange
        self.target = 0  # highest cumulative sent or on the wire
        self.confirmed = 0  # highest cumulative the server acknowledged
        self.position = 0  # estimated server spent
        self.in_flight = 0
        self.deposit = self.read_deposit()  # vouchers beyond it wait for a topUp (SES-31)
        last = exchange.receipts[-1] if exchange.receipts else {}
        accepted, spent = _amount(last.get("acceptedCumulative")), _amount(last.get("spent"))
        if accepted is not None and spent is not None:
            self.target = self.confirmed = accepted
            self.position = spent

    def read_deposit(self) -> int | None:
        """The channel's deposit from the payer's records (a store read: off the event loop)."""
        rec = self.ex.auth.payer.channel(self.ex.channel_id)
        return None if rec is None else rec.deposit

    def answered(self, required: int, target: int) -> None:
        self.position = max(self.position, required - self.ex.unit_price)
        self.target = max(self.target, target)
        self.confirmed = max(self.confirmed, target)

    def seen(self, clean: bytes, now: float) -> int | None:
        """Count delivered events; the next cumulative to sign now (then on the wire), or None."""
        events = clean.count(b"\n\n")
        if self.ex.window is not None:
            self.ex.window.delivered(events, now)
        prepay = self.ex.auth.lead_units(self.ex) * self.ex.unit_price
        if not prepay or not self.target:
            return None
        self.ex.budget.widen(2 * prepay)
        self.position += events * self.ex.unit_price
        if self.in_flight >= MAX_IN_FLIGHT or self.target - self.position >= prepay:
            return None
        nxt = self.ex.budget.cap(self.position + 2 * prepay)
        if self.deposit is not None:
            nxt = min(nxt, self.deposit)  # beyond it: need-voucher and a topUp (SES-31)
        if nxt <= self.target:
            return None
        self.ex.budget.signing(nxt)
        self.target = nxt
        self.in_flight += 1
        return nxt

    def done(self, cumulative: int, ok: bool, seconds: float) -> None:
        self.in_flight -= 1
        if ok:
            self.confirmed = max(self.confirmed, cumulative)
            if self.ex.window is not None:
                self.ex.window.round_trip(seconds)
        elif self.in_flight == 0:
            self.target = self.confirmed  # resend from what the server has

    def covered(self, required: int) -> bool:
        """A need-voucher the server sent before our voucher arrived: nothing to do."""
        return bool(self.confirmed) and required <= self.confirmed

    def ran_dry(self, required: int) -> None:
        """A need-voucher nothing of ours covers: the server paused us; widen the window."""
        if self.ex.window is not None and required > self.target:
            self.ex.window.paused()


def _amount(value: object) -> int | None:
    return decimal_amount(value)


def plan_voucher(exchange: PaidExchange, event: PaymentEvent) -> tuple[str, int, int]:
    """(channel id, cumulative to sign, top-up needed first) for a need-voucher event; raises
    ServerOverreach when the server asks beyond what it delivered (mpp.session.budget)."""
    cid = str(event.data.get("channelId", "")).lower()
    if cid != exchange.channel_id:
        raise ServerOverreach("need-voucher for a channel this request did not pay with")
    required = _int(event.data, "requiredCumulative")
    rec = exchange.auth.payer.channel(cid)
    if rec is None:
        raise PayerError("unknown channel")
    exchange.budget.check(required)  # before any top-up or signature
    lead = exchange.auth.lead_units(exchange) * exchange.unit_price
    target = exchange.budget.cap(required + lead)
    deposit = max(rec.deposit, _int(event.data, "deposit"))
    topup = 0
    if required > deposit:  # SES-31: MUST top up first
        topup = max(exchange.auth.topup_amount or 0, target - deposit)
    elif target > deposit:
        target = deposit  # prepay only what the deposit allows
    exchange.budget.signing(target)
    return cid, target, topup


class PaidSyncStream(httpx.SyncByteStream):
    """Prepay vouchers are signed and sent by worker threads while the reader goes on; a
    need-voucher (the server paused) is answered by the reader itself."""

    def __init__(self, inner: httpx.SyncByteStream, exchange: PaidExchange) -> None:
        self._inner = inner
        self._exchange = exchange
        self._ahead = Ahead(exchange)
        self._cond = threading.Condition()  # guards _ahead (reader thread + voucher workers)
        self._answering = threading.Lock()  # need-voucher answers one at a time
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False

    def _submit(self, work: Callable[[], None]) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(MAX_IN_FLIGHT + 1, thread_name_prefix="mpp-voucher")
        self._pool.submit(work)

    def __iter__(self) -> Iterator[bytes]:
        filt = PaymentEventFilter()
        for chunk in self._inner:
            clean, events = filt.feed(chunk)
            if clean:
                self._exchange.budget.delivered(clean.count(b"\n\n"))
            for event in events:
                self._on_event(event)
            if clean:
                with self._cond:
                    nxt = self._ahead.seen(clean, time.monotonic())
                if nxt is not None:  # signed and sent by a worker; reading goes on
                    self._submit(functools.partial(self._prepay, nxt))
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
            required = _int(event.data, "requiredCumulative")
        except ValueError:
            log.warning("ignored a malformed payment-need-voucher event")
            return
        if ex.budget.asked(required):  # ServerOverreach ends the stream: nothing is signed
            self._answer(event, required)

    def _answer(self, event: PaymentEvent, required: int) -> None:
        ex = self._exchange
        with self._answering:
            try:
                with self._cond:  # a voucher on the wire may cover it: let it land first
                    self._cond.wait_for(
                        lambda: (
                            self._closed
                            or self._ahead.in_flight == 0
                            or self._ahead.covered(required)
                        ),
                        timeout=ex.auth.timeout,
                    )
                    if self._closed or self._ahead.covered(required):
                        return
                    self._ahead.ran_dry(required)
                cid, target, topup = plan_voucher(ex, event)
                if topup:
                    ex.auth.topup_sync(ex, cid, topup)
                    deposit = self._ahead.read_deposit()
                    with self._cond:
                        self._ahead.deposit = deposit
                ex.auth.send_voucher_sync(ex, cid, target)
                with self._cond:
                    self._ahead.answered(required, target)
            except (PayerError, ValueError, httpx.HTTPError) as exc:
                # ServerOverreach included: nothing signed. The server ends the stream after
                # its timeout; the caller still gets what came.
                log.warning("could not answer payment-need-voucher: %s", type(exc).__name__)

    def _prepay(self, cumulative: int) -> None:
        ex = self._exchange
        ok = False
        sent = time.monotonic()
        try:
            ex.auth.send_voucher_sync(ex, ex.channel_id, cumulative)
            ok = True
        except (PayerError, httpx.HTTPError) as exc:
            log.info("prepay-ahead voucher not sent: %s", type(exc).__name__)
        finally:
            with self._cond:
                self._ahead.done(cumulative, ok, time.monotonic() - sent)
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._inner.close()


class PaidAsyncStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, exchange: PaidExchange) -> None:
        self._inner = inner
        self._exchange = exchange
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()  # need-voucher answers one at a time, in event order
        self._landed = asyncio.Condition()  # a prepay voucher was answered
        self._ahead = Ahead(exchange)  # only touched on the event loop
        self._refused: ServerOverreach | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        filt = PaymentEventFilter()
        async for chunk in self._inner:
            clean, events = filt.feed(chunk)
            if clean:
                self._exchange.budget.delivered(clean.count(b"\n\n"))
            for event in events:
                await self._on_event(event)
            if self._refused is not None:
                raise self._refused
            if clean:
                nxt = self._ahead.seen(clean, time.monotonic())
                if nxt is not None:
                    self._spawn(self._prepay(nxt))
                yield clean
        clean, events = filt.flush()
        for event in events:
            await self._on_event(event)
        if clean:
            yield clean

    async def _on_event(self, event: PaymentEvent) -> None:
        if event.event == RECEIPT:  # recorded in the payer's store, off the event loop
            await anyio.to_thread.run_sync(self._exchange.add_receipt, event.data)
        elif event.event == NEED_VOUCHER:
            try:
                answer = self._exchange.budget.asked(_int(event.data, "requiredCumulative"))
            except ServerOverreach as exc:
                self._refused = exc  # raised by the reader: the stream ends, nothing signed
                return
            except ValueError:
                log.warning("ignored a malformed payment-need-voucher event")
                return
            if answer:
                self._spawn(self._answer(event))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _prepay(self, cumulative: int) -> None:
        ex = self._exchange
        ok = False
        sent = time.monotonic()
        try:
            await ex.auth.send_voucher_async(ex, ex.channel_id, cumulative)
            ok = True
        except (PayerError, httpx.HTTPError) as exc:
            log.info("prepay-ahead voucher not sent: %s", type(exc).__name__)
        finally:
            self._ahead.done(cumulative, ok, time.monotonic() - sent)
            async with self._landed:
                self._landed.notify_all()

    async def _answer(self, event: PaymentEvent) -> None:
        ex = self._exchange
        async with self._lock:
            try:
                required = _int(event.data, "requiredCumulative")
                async with self._landed:  # a voucher on the wire may cover it
                    await asyncio.wait_for(
                        self._landed.wait_for(
                            lambda: self._ahead.in_flight == 0 or self._ahead.covered(required)
                        ),
                        ex.auth.timeout,
                    )
                if self._ahead.covered(required):
                    return
                self._ahead.ran_dry(required)
                cid, target, topup = await anyio.to_thread.run_sync(plan_voucher, ex, event)
                if topup:
                    await ex.auth.topup_async(ex, cid, topup)
                    self._ahead.deposit = await anyio.to_thread.run_sync(self._ahead.read_deposit)
                await ex.auth.send_voucher_async(ex, cid, target)
                self._ahead.answered(required, target)
            except ServerOverreach as exc:
                self._refused = exc
            except (PayerError, DepositExhausted, ValueError, httpx.HTTPError) as exc:
                log.warning("could not answer payment-need-voucher: %s", type(exc).__name__)
            except TimeoutError:
                log.warning("could not answer payment-need-voucher: vouchers still in flight")

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self._inner.aclose()
