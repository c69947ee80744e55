"""Client spending policy: checked before anything is signed (CORE-39; docs/development.md).

`None` for a limit or an allow-list means "no restriction". Addresses are compared as 20-byte
values (lowercased), chain ids as ints.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mpp.session.terms import SessionTerms

__all__ = ["PolicyViolation", "SpendingPolicy"]


class PolicyViolation(ValueError):
    """The payer refused to sign: the terms or the amount break its spending policy.

    A client-side error, not an HTTP problem: nothing was signed or sent.
    """


def _lower_set(values: Iterable[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(v.lower() for v in values)


@dataclass(frozen=True)
class SpendingPolicy:
    """`max_lead`: the most a payer keeps authorized beyond what it was delivered (base units;
    the lookahead window is capped by it, mpp.session.budget and mpp.session.window).
    `max_lead_seconds`: the lead of a metered stream never exceeds this many seconds of its
    measured consumption (mpp.session.window)."""

    max_amount_per_unit: int | None = None
    max_deposit: int | None = None
    allowed_recipients: frozenset[str] | None = None
    allowed_tokens: frozenset[str] | None = None
    allowed_chain_ids: frozenset[int] | None = None
    allowed_escrows: frozenset[str] | None = None
    max_lead: int | None = None
    max_lead_seconds: float | None = 2.0

    def __post_init__(self) -> None:
        for name in ("allowed_recipients", "allowed_tokens", "allowed_escrows"):
            object.__setattr__(self, name, _lower_set(getattr(self, name)))
        if self.allowed_chain_ids is not None:
            object.__setattr__(self, "allowed_chain_ids", frozenset(self.allowed_chain_ids))

    def lead_units_cap(self, unit_price: int) -> int | None:
        """The most units a lookahead window may hold: vouchers are signed up to twice the
        window ahead of delivery (mpp.session.ahead), and that stays within `max_lead`."""
        if self.max_lead is None:
            return None
        return max(0, self.max_lead // max(1, 2 * unit_price))

    def check_terms(self, terms: SessionTerms) -> None:
        """Refuse a challenge whose price or coordinates are not allowed."""
        if self.max_amount_per_unit is not None and terms.amount > self.max_amount_per_unit:
            raise PolicyViolation(
                f"price per unit {terms.amount} exceeds the policy maximum "
                f"{self.max_amount_per_unit}"
            )
        if self.allowed_recipients is not None and terms.recipient not in self.allowed_recipients:
            raise PolicyViolation(f"recipient {terms.recipient} is not allowed")
        if self.allowed_tokens is not None and terms.currency not in self.allowed_tokens:
            raise PolicyViolation(f"currency {terms.currency} is not allowed")
        if self.allowed_chain_ids is not None and terms.chain_id not in self.allowed_chain_ids:
            raise PolicyViolation(f"chain id {terms.chain_id} is not allowed")
        if self.allowed_escrows is not None and terms.escrow_contract not in self.allowed_escrows:
            raise PolicyViolation(f"escrow {terms.escrow_contract} is not allowed")

    def check_deposit(self, total_deposit: int) -> None:
        """Refuse a channel whose total deposit (after a topUp) exceeds the policy maximum."""
        if total_deposit <= 0:
            raise PolicyViolation("deposit must be positive")
        if self.max_deposit is not None and total_deposit > self.max_deposit:
            raise PolicyViolation(
                f"deposit {total_deposit} exceeds the policy maximum {self.max_deposit}"
            )

    def default_deposit(self, terms: SessionTerms) -> int:
        """min(suggestedDeposit, max_deposit), like the TypeScript client; at least one unit."""
        candidates = [c for c in (terms.suggested_deposit, self.max_deposit) if c is not None]
        if not candidates:
            raise PolicyViolation("no deposit given and neither suggestedDeposit nor max_deposit")
        return max(min(candidates), terms.amount)
