"""What the session server tells the client (pure: no I/O, no clock).

The SES-33 receipt (header and final event) and the SES-31 `payment-need-voucher` event. All
amounts are decimal strings so no JSON reader rounds them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mpp.core.amounts import decimal_amount
from mpp.session.ports import ChannelState
from mpp.session.scheme import INTENT

__all__ = ["NeedVoucher", "need_voucher", "receipt_fields"]


def receipt_fields(
    state: ChannelState,
    *,
    method: str,
    delivered: int,
    challenge_id: str,
    timestamp: str,
    units: int | None = None,
    cost: int | None = None,
    tx_hash: str | None = None,
) -> dict[str, Any]:
    """SES-33: `spent` is what was `delivered` on the channel (cumulative, not counting the
    server's undelivered reservations, SES-30); `units` is this request's (AMB-13).

    Beyond SES-33 (clients ignore unknown fields, CORE-41), so a payer sees its money without
    arithmetic: `cost`, what this request delivered (base units), and `balance`, what the
    channel can still pay (deposit − spent)."""
    receipt: dict[str, Any] = {
        "method": method,
        "intent": INTENT,
        "status": "success",
        "timestamp": timestamp,
        "reference": state.channel_id,
        "challengeId": challenge_id,
        "channelId": state.channel_id,
        "acceptedCumulative": str(state.accepted_cumulative),
        "spent": str(delivered),
    }
    if units is not None:
        receipt["units"] = units
    if cost is not None:
        receipt["cost"] = str(cost)
    receipt["balance"] = str(max(0, state.deposit - delivered))
    if tx_hash is not None:
        receipt["txHash"] = tx_hash
    return receipt


@dataclass(frozen=True)
class NeedVoucher:
    """SES-31 `payment-need-voucher` data, typed: amounts are decimal strings on the wire."""

    channel_id: str
    required_cumulative: int
    accepted_cumulative: int
    deposit: int

    @classmethod
    def parse(cls, data: Mapping[str, object]) -> NeedVoucher:
        """ValueError for a missing channelId or an amount that is not an ASCII decimal."""
        cid = data.get("channelId")
        if not isinstance(cid, str) or not cid:
            raise ValueError("need-voucher without a channelId")
        amounts = []
        for name in ("requiredCumulative", "acceptedCumulative", "deposit"):
            amount = decimal_amount(data.get(name))
            if amount is None:
                raise ValueError(f"need-voucher field {name} is not a decimal string")
            amounts.append(amount)
        return cls(cid.lower(), *amounts)

    def to_json(self) -> dict[str, str]:
        return {
            "channelId": self.channel_id,
            "requiredCumulative": str(self.required_cumulative),
            "acceptedCumulative": str(self.accepted_cumulative),
            "deposit": str(self.deposit),
        }


def need_voucher(state: ChannelState, cost: int, *, min_voucher_delta: int) -> NeedVoucher:
    """SES-31: what the server asks for to send `cost` more. The required amount also satisfies
    minVoucherDelta, so the client's voucher is not refused as too small (SES-23)."""
    required = max(state.spent + cost, state.accepted_cumulative + min_voucher_delta)
    return NeedVoucher(state.channel_id, required, state.accepted_cumulative, state.deposit)
