"""What a payer signs while a metered response streams: vouchers ahead of delivery, and the
answer to a `payment-need-voucher` (SES-31). Pure: no I/O and no clock; the HTTP client feeds
what it reads and sends what these functions decide.

`Ahead` estimates the server's position from the content events received (one unit per event,
the LLM-token case, starting from the header receipt's `spent`) and, each time less than the
lead is left authorized, says which cumulative to sign next: up to `position + 2 × lead`, within
the stream's budget (mpp.session.budget) and the deposit. Vouchers still on the wire count, so
when the stream outruns a voucher round trip the next one goes out before the previous one is
answered (up to MAX_IN_FLIGHT): the server never runs dry while vouchers arrive faster than it
streams. The lead is the bandwidth × delay window (mpp.session.window) or a fixed override.
"""

from __future__ import annotations

from dataclasses import dataclass

from mpp.session.budget import ServerOverreach, StreamBudget
from mpp.session.receipts import NeedVoucher
from mpp.session.window import LeadWindow

__all__ = ["MAX_IN_FLIGHT", "Ahead", "VoucherPlan", "plan_need"]

MAX_IN_FLIGHT = 4  # prepay vouchers on the wire at once, per stream


@dataclass(frozen=True)
class VoucherPlan:
    """The answer to a need-voucher: top up by `topup` first (0: none), then sign `target`."""

    target: int
    topup: int


def plan_need(
    need: NeedVoucher,
    *,
    channel_id: str,
    budget: StreamBudget,
    lead: int,
    deposit: int,
    topup_amount: int | None = None,
) -> VoucherPlan:
    """What to sign for `need` on the channel this response pays with: `required + lead` within
    the budget. SES-31: when more than the deposit is required, top up first (at least
    `topup_amount`); otherwise prepay only what the deposit allows. ServerOverreach (nothing is
    signed) for another channel or beyond the budget."""
    if need.channel_id != channel_id:
        raise ServerOverreach("need-voucher for a channel this request did not pay with")
    budget.check(need.required_cumulative)  # before any top-up or signature
    target = budget.cap(need.required_cumulative + lead)
    deposit = max(deposit, need.deposit)
    topup = 0
    if need.required_cumulative > deposit:
        topup = max(topup_amount or 0, target - deposit)
    elif target > deposit:
        target = deposit
    budget.signing(target)
    return VoucherPlan(target, topup)


@dataclass
class Ahead:
    """The prepay-ahead state of one stream (not thread-safe: callers lock around it)."""

    unit_price: int
    budget: StreamBudget
    window: LeadWindow | None = None  # None: the fixed lead
    fixed_lead: int | None = None  # units; `prepay_units`
    deposit: int | None = None  # vouchers beyond it wait for a topUp (SES-31)
    target: int = 0  # highest cumulative sent or on the wire
    confirmed: int = 0  # highest cumulative the server acknowledged
    position: int = 0  # estimated server spent
    in_flight: int = 0

    def start(self, accepted: int | None, spent: int | None) -> None:
        """From the header receipt: what the server accepted and had spent."""
        if accepted is not None and spent is not None:
            self.target = self.confirmed = accepted
            self.position = spent

    def lead_units(self) -> int:
        if self.fixed_lead is not None:
            return self.fixed_lead
        return 0 if self.window is None else self.window.units()

    def seen(self, events: int, now: float) -> int | None:
        """`events` content events delivered; the next cumulative to sign now, or None."""
        if self.window is not None:
            self.window.delivered(events, now)
        prepay = self.lead_units() * self.unit_price
        if not prepay or not self.target:
            return None
        self.budget.widen(2 * prepay)
        self.position += events * self.unit_price
        if self.in_flight >= MAX_IN_FLIGHT or self.target - self.position >= prepay:
            return None
        nxt = self.budget.cap(self.position + 2 * prepay)
        if self.deposit is not None:
            nxt = min(nxt, self.deposit)  # beyond it: need-voucher and a topUp (SES-31)
        if nxt <= self.target:
            return None
        self.budget.signing(nxt)
        self.target = nxt
        self.in_flight += 1
        return nxt

    def done(self, cumulative: int, ok: bool, seconds: float) -> None:
        """A prepay voucher was answered (`ok`) or failed, after `seconds`."""
        self.in_flight -= 1
        if ok:
            self.confirmed = max(self.confirmed, cumulative)
            if self.window is not None:
                self.window.round_trip(seconds)
        elif self.in_flight == 0:
            self.target = self.confirmed  # resend from what the server has

    def covered(self, required: int) -> bool:
        """A need-voucher the server sent before our voucher arrived: nothing to do."""
        return bool(self.confirmed) and required <= self.confirmed

    def ran_dry(self, required: int) -> None:
        """A need-voucher nothing of ours covers: the server paused us; widen the window."""
        if self.window is not None and required > self.target:
            self.window.paused()

    def answered(self, required: int, target: int) -> None:
        self.position = max(self.position, required - self.unit_price)
        self.target = max(self.target, target)
        self.confirmed = max(self.confirmed, target)
