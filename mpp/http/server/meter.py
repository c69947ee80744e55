"""A paid response's meter: the one owner of its reservation, and its state machine.

    RESERVED ──2xx starts──▶ STARTED (JSON) ───────────────────────────┐
        │       └──────────▶ STREAMING ◀──voucher──▶ AWAITING_VOUCHER  │
        │                       │                        │             ▼
        └──────────────▶ CLOSING ◀───────────────────────┘ ──────▶ RECEIPTED

- RESERVED: paid, the response has not started. Units used now (a prompt, a held JSON answer)
  count as delivered only once a 2xx starts; a 402 or an error gives them back.
- STARTED / STREAMING: a 2xx is being sent. Every unit is taken from the reservation before it
  is sent (`charge`); the reservation is refilled from what the payer authorized, in one store
  write (all that is authorized, by default). Below half of the last refill, a streaming
  response asks once, early, without pausing (SES-31).
- AWAITING_VOUCHER: a stream ran dry; one `payment-need-voucher` went out and the stream waits
  for a voucher on its channel (from any request, VoucherWaiters) up to `voucher_timeout`.
- CLOSING: no more units (no voucher in time, superseded by a newer stream (SES-34), the
  channel closing (SES-21), the server draining, unpaid before the start). The handler's next
  `charge` returns False and the response ends cleanly.
- RECEIPTED: what was reserved and not delivered went back; the final receipt is made.

Off the event loop: store work runs on the host's paying lane (mpp.http.server.lanes).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol, TypeVar

import anyio

from mpp.core.errors import InsufficientBalance, PaymentError
from mpp.http.server.gate import Paid, PaymentGate
from mpp.http.server.waiters import VoucherWaiters
from mpp.http.sse import NEED_VOUCHER, format_event
from mpp.session.ports import ChannelState
from mpp.session.receipts import NeedVoucher

__all__ = ["SCOPE_KEY", "Meter", "MeterHost", "Phase", "get_meter"]

T = TypeVar("T")
SCOPE_KEY = "mpp.meter"


class Phase(enum.Enum):
    RESERVED = "reserved"
    STARTED = "started"
    STREAMING = "streaming"
    AWAITING_VOUCHER = "awaiting voucher"
    CLOSING = "closing"
    RECEIPTED = "receipted"


_NEXT: dict[Phase, frozenset[Phase]] = {
    Phase.RESERVED: frozenset({Phase.STARTED, Phase.STREAMING, Phase.CLOSING, Phase.RECEIPTED}),
    Phase.STARTED: frozenset({Phase.CLOSING, Phase.RECEIPTED}),
    Phase.STREAMING: frozenset({Phase.AWAITING_VOUCHER, Phase.CLOSING, Phase.RECEIPTED}),
    Phase.AWAITING_VOUCHER: frozenset({Phase.STREAMING, Phase.CLOSING}),
    Phase.CLOSING: frozenset({Phase.RECEIPTED}),
    Phase.RECEIPTED: frozenset(),
}


class MeterHost(Protocol):
    """What a Meter needs from the middleware that serves its response."""

    gate: PaymentGate
    voucher_timeout: float
    reserve_units: int | None
    waiters: VoucherWaiters
    draining: bool

    def paused(self, channel_id: str) -> None: ...

    def current_stream(self, channel_id: str) -> int | None: ...

    async def run_fast(self, work: Callable[[], T]) -> T: ...


class Meter:
    """Charges a paid request's units; a no-op for requests let through unpaid (API keys).

    The owner of the paid response's reservation, and its state machine (`Phase`)."""

    def __init__(
        self,
        middleware: MeterHost | None = None,
        paid: Paid | None = None,
        emit: Callable[[bytes], Awaitable[bool]] | None = None,
    ) -> None:
        self._mw = middleware
        self.paid = paid
        self._emit = emit
        self.units = 0  # metered units delivered in this request
        self._used = 0  # what those units cost (base units)
        # Charged in the store, not yet used (released at the end); a metered request starts
        # with what was reserved in its voucher's own transaction (PaymentGate.execute).
        self.reserved = paid.result.reserved if paid is not None and paid.route.price.metered else 0
        # Used before the response started: delivered only once a 2xx starts; a request that
        # ends as a 402 or an error before that gives it back (nothing was delivered).
        self.unstarted = 0
        self.insufficient: PaymentError | None = None  # ran dry before the response started
        self.phase = Phase.RESERVED
        self.started = False  # a 2xx response began (what is used from now on is delivered)
        self.event_stream = False
        self.generation = 0  # SES-34: this stream's number on its channel (0: not a stream)
        self.state: ChannelState | None = paid.result.state if paid else None
        self._last_reservation = self.reserved  # the early ask's low-water mark is half of it
        self._last_ask: NeedVoucher | None = None  # the last need-voucher asked for

    @property
    def ended(self) -> bool:
        """No more units: the stream ends (cleanly) at its next charge."""
        return self.phase in (Phase.CLOSING, Phase.RECEIPTED)

    def _to(self, phase: Phase) -> None:
        if phase is not self.phase and phase not in _NEXT[self.phase]:
            raise RuntimeError(f"paid response: {self.phase.value} -> {phase.value}")
        self.phase = phase

    def _close(self) -> None:
        if not self.ended:
            self._to(Phase.CLOSING)

    @property
    def is_paid(self) -> bool:
        return self.paid is not None

    @property
    def cost(self) -> int:
        """Base units this request delivers: its metered units, or its fixed price."""
        if self.paid is None:
            return 0
        price = self.paid.route.price
        return self._used if price.metered else price.amount + self._used

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
        if self.ended or self._superseded() or self._mw.draining:
            self._close()
            return False
        cost = units * self.unit_price
        if cost <= self.reserved:
            if not self._consume(cost, units):
                return False
            await self._ask_early()
            return True
        mw, cid = self._mw, self.paid.channel_id
        deadline = time.monotonic() + mw.voucher_timeout
        while True:
            with mw.waiters.subscribe(cid) as sub:  # before the check: no lost wake-up
                short = await self._reserve(cost - self.reserved)
                if short is None:
                    if self.phase is Phase.AWAITING_VOUCHER:
                        self._to(Phase.STREAMING)
                    return self._consume(cost, units)
                if self.phase not in (Phase.STREAMING, Phase.AWAITING_VOUCHER) or not self._emit:
                    self.insufficient = short  # cannot ask mid-stream: the answer becomes a 402
                    self._close()
                    return False
                if self.ended:
                    return False  # finalized / close requested meanwhile (SES-21)
                assert self.state is not None
                if self.phase is Phase.STREAMING:
                    self._to(Phase.AWAITING_VOUCHER)
                    mw.paused(cid)  # the payer did not keep up: counted and logged
                event = mw.gate.engine.need_voucher_event(self.state, cost - self.reserved)
                if event != self._last_ask:  # the same ask twice in a row is no news
                    self._last_ask = event
                    if not await self._emit(format_event(NEED_VOUCHER, event.to_json())):
                        self._close()
                        return False
                left = deadline - time.monotonic()
                if left <= 0 or not await sub.wait(left):
                    self._close()  # SES-31: no voucher in time → end cleanly
                    return False
                if self._superseded() or mw.draining:
                    self._close()
                    return False

    def give_back(self, units: int) -> None:
        """Undo a `charge(units)` made before the response started (nothing was sent): the
        cost goes back to the reservation, in memory (the store only learns what is used when
        the response starts or the reservation is released)."""
        if units <= 0:
            return
        if self.started:
            raise RuntimeError("units already sent cannot be given back")
        cost = units * self.unit_price if self.paid is not None else 0
        self.unstarted -= cost
        self.reserved += cost
        self._used -= cost
        self.units -= units

    async def hold(self, units: int) -> bool:
        """Reserve `units` before the response starts, for an answer sent whole (JSON): it
        cannot ask for a voucher halfway, so it holds what its longest outcome costs, at most
        what the deposit can still pay. False: the answer becomes one 402 whose `requiredTopUp`
        is exactly the shortfall (SES-27). What is not used goes back when the request ends
        (`settle_reservation`), so the payer pays exactly its usage."""
        if units < 0:
            raise ValueError("units must be non-negative")
        if self.paid is None or self._mw is None or self.state is None:
            return True
        room = self.reserved + max(0, self.state.deposit - self.state.spent)
        cost = min(units * self.unit_price, room)
        if cost <= self.reserved:
            return True
        short = await self._reserve(cost - self.reserved)
        if short is not None:
            self.insufficient = short
            self._close()
            return False
        return True

    async def _ask_early(self) -> None:
        """SES-31, asked early: once the reservation falls below half of the last one taken and
        the store has nothing more authorized, one `payment-need-voucher` (no pause) per
        accepted amount, so a payer that only answers asks gets its voucher here in time. A
        payer that keeps its own lead never sees the stream pause; the ask costs it nothing."""
        state = self.state
        if self.phase is not Phase.STREAMING or not self._emit or state is None:
            return
        if self.reserved * 2 >= self._last_reservation or state.available > 0:
            return
        if self._mw is None or (self._last_ask is not None and self._last_ask_for(state)):
            return
        event = self._mw.gate.engine.need_voucher_event(state, self.unit_price)
        self._last_ask = event
        if not await self._emit(format_event(NEED_VOUCHER, event.to_json())):
            self._close()

    def _last_ask_for(self, state: ChannelState) -> bool:
        """The last ask was made at this accepted amount (once per window)."""
        assert self._last_ask is not None
        return self._last_ask.accepted_cumulative == state.accepted_cumulative

    def _superseded(self) -> bool:
        """SES-34: a newer stream on the same channel ends this one (cleanly)."""
        if self._mw is None or self.paid is None or not self.generation:
            return False
        if self._mw.current_stream(self.paid.channel_id) == self.generation:
            return False
        self._close()
        return True

    def _consume(self, cost: int, units: int) -> bool:
        """Use `cost` of the reservation for `units` about to be sent; False (nothing used)
        when the channel must not serve any more (a close requested or in flight, SES-21)."""
        assert self._mw is not None and self.paid is not None
        if self.started:
            if not self._mw.gate.engine.commit(self.paid.channel_id, cost):
                self._close()
                return False
        else:
            self.unstarted += cost
        self.reserved -= cost
        self.units += units
        self._used += cost
        return True

    def response_started(self, event_stream: bool) -> None:
        """A 2xx response starts: what was used before it is delivered from now on."""
        if not self.ended:
            self._to(Phase.STREAMING if event_stream else Phase.STARTED)
        self.started = True
        self.event_stream = event_stream
        if self._mw is not None and self.paid is not None and self.unstarted:
            # Already produced and about to be sent with the response: delivered regardless.
            self._mw.gate.engine.commit(self.paid.channel_id, self.unstarted, force=True)
        self.unstarted = 0

    async def _reserve(self, need: int) -> PaymentError | None:
        """Charge `need` (plus headroom up to `reserve_units`); None on success."""
        assert self._mw is not None and self.paid is not None
        engine, cid = self._mw.gate.engine, self.paid.channel_id
        challenge_id = self.paid.challenge.id
        hint = self.state.available if self.state is not None else 0
        if self._mw.reserve_units is not None:
            hint = min(self._mw.reserve_units * self.unit_price, hint)
        want = max(need, hint)  # by default all that is authorized: one write per voucher

        def run() -> tuple[ChannelState | None, int, PaymentError | None]:
            for amount in dict.fromkeys((want, need)):
                try:
                    state = engine.charge(cid, amount, challenge_id=challenge_id, reserve=True)
                    return state, amount, None
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
                self._close()  # finalized / close requested: stop serving (SES-21)
            return error
        self.reserved += amount
        self._last_reservation = amount
        return None

    async def settle_reservation(self) -> None:
        """No unit follows: give back what was reserved but not delivered
        (SessionServer.release); the final receipt is made from the state this leaves."""
        self._to(Phase.RECEIPTED)
        if self.paid is None or self._mw is None or self.reserved + self.unstarted <= 0:
            return
        amount, self.reserved, self.unstarted = self.reserved + self.unstarted, 0, 0
        engine, cid, chid = self._mw.gate.engine, self.paid.channel_id, self.paid.challenge.id
        with anyio.CancelScope(shield=True):
            state = await self._mw.run_fast(lambda: engine.release(cid, amount, challenge_id=chid))
            self.state = state or self.state


def get_meter(request: Any) -> Meter:
    """The Meter of a request (a Starlette/FastAPI Request or an ASGI scope)."""
    scope = getattr(request, "scope", request)
    meter = scope.get(SCOPE_KEY) if isinstance(scope, MutableMapping) else None
    return meter if isinstance(meter, Meter) else Meter()
