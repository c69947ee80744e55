"""What a payer may authorize while a paid response streams (CORE-39, applied mid-stream).

A server asks for vouchers with `payment-need-voucher` events; nothing in the protocol stops it
from asking for the whole deposit after two tokens, or from asking again and again without
sending anything. `StreamBudget` is the payer's own count: starting from what was covered when
the response began, it allows at most the value DELIVERED since (counted from the stream's
events at the challenge's unit price) plus the lookahead window plus one unit. A request beyond
that, or more than `max_empty_asks` asks in a row that bring no content, is refused with
`ServerOverreach`: the stream ends and nothing is signed.

One request beyond it is not a refusal: an early ask (SES-31, not a pause) while the server still
holds value we signed and it has not delivered, for at most one window more than we signed.
That happens when a response starts with a lead
carried over from an earlier one that is larger than this response's window: the server asks
for the next unit at half of it. Nothing is signed for it and the stream goes on; when the server
really runs dry, its ask is within the allowance.

Pure (no I/O, no clock): the HTTP client feeds it what it reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from mpp.session.policy import PolicyViolation

__all__ = ["DEFAULT_MAX_EMPTY_ASKS", "ServerOverreach", "StreamBudget"]

DEFAULT_MAX_EMPTY_ASKS = 3


class ServerOverreach(PolicyViolation):
    """The server asked for more than it delivered plus the lookahead window allows, or kept
    asking without delivering: nothing was signed and the stream ends."""


@dataclass
class StreamBudget:
    """The payer's allowance for one paid response on one channel.

    `base`: the cumulative amount the server had earned when the response started, as far as
    we accept it (the header receipt's `spent`, never above what we had signed before).
    `window`: the lookahead value the payer keeps authorized ahead of delivery (bounded by the
    spending policy's `max_lead`). `units_per_event`: metered units per content event (one
    token per chunk for an LLM stream).
    """

    unit_price: int
    base: int
    window: int
    units_per_event: int = 1
    max_empty_asks: int = DEFAULT_MAX_EMPTY_ASKS
    max_window: int | None = None  # the spending policy's max_lead
    signed: int = 0  # the highest cumulative we have signed on the channel
    delivered_units: int = 0
    empty_asks: int = 0

    @classmethod
    def for_response(
        cls,
        *,
        unit_price: int,
        signed: int,
        spent: int,
        lead: int,
        min_voucher_delta: int = 0,
        max_window: int | None = None,
    ) -> StreamBudget:
        """The allowance of a response that starts with `signed` signed by us and `spent`
        earned as far as we know (the header receipt's): its base is what was covered, never
        above what we signed; its window twice the lead value (`lead` in base units), at least
        `min_voucher_delta` so the server may ask for a voucher it would accept (SES-23)."""
        budget = cls(unit_price, min(signed, spent), 0, max_window=max_window, signed=signed)
        budget.widen(max(2 * lead, min_voucher_delta))
        return budget

    @property
    def limit(self) -> int:
        """The highest cumulative amount this response may make us sign."""
        return self.base + (self.delivered_units + 1) * self.unit_price + self.window

    def widen(self, window: int) -> None:
        """The payer's own lookahead window grew (mpp.session.window measures it from what it
        reads, never from what the server asks): allow it, within `max_window`. It never
        shrinks during a response."""
        if self.max_window is not None:
            window = min(window, self.max_window)
        self.window = max(self.window, window)

    @property
    def lead_left(self) -> int:
        """Value we signed that the server has not delivered yet (as far as we count)."""
        return self.signed - self.base - self.delivered_units * self.unit_price

    def signing(self, cumulative: int) -> None:
        """We sign (or signed) a voucher for `cumulative`."""
        self.signed = max(self.signed, cumulative)

    def delivered(self, events: int) -> None:
        """`events` content events arrived: they are delivered units."""
        if events > 0:
            self.delivered_units += events * self.units_per_event
            self.empty_asks = 0

    def asked(self, required: int) -> bool:
        """A need-voucher for `required`. True: answer it. False: an early ask beyond the
        allowance (at most one window past what we signed) while the server still holds
        undelivered value we signed; sign nothing, the stream goes on. Raises ServerOverreach
        (the stream ends) when it exceeds the allowance otherwise, or when the server keeps
        asking with nothing delivered in between."""
        self.empty_asks += 1
        if self.empty_asks > self.max_empty_asks:
            raise ServerOverreach(
                f"the server asked for a voucher {self.empty_asks} times without sending "
                "anything in between"
            )
        if required > self.limit and self.lead_left > 0 and required <= self.signed + self.window:
            return False
        self.check(required)
        return True

    def check(self, cumulative: int) -> None:
        if cumulative > self.limit:
            raise ServerOverreach(
                f"the server asked for a cumulative {cumulative}, more than the "
                f"{self.limit} its delivered units and the lookahead window allow"
            )

    def cap(self, cumulative: int) -> int:
        """Our own prepay target, kept within the allowance."""
        return min(cumulative, self.limit)
