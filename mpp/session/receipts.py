"""What the session server tells the client (pure: no I/O, no clock).

The SES-33 receipt (header and final event) and the SES-31 `payment-need-voucher` event. All
amounts are decimal strings so no JSON reader rounds them.
"""

from __future__ import annotations

from typing import Any

from mpp.session.ports import ChannelState
from mpp.session.scheme import INTENT

__all__ = ["need_voucher_fields", "receipt_fields"]


def receipt_fields(
    state: ChannelState,
    *,
    method: str,
    delivered: int,
    challenge_id: str,
    timestamp: str,
    units: int | None = None,
    tx_hash: str | None = None,
) -> dict[str, Any]:
    """SES-33: `spent` is what was `delivered` on the channel (cumulative, not counting the
    server's undelivered reservations, SES-30); `units` is this request's (AMB-13)."""
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
    if tx_hash is not None:
        receipt["txHash"] = tx_hash
    return receipt


def need_voucher_fields(
    state: ChannelState, cost: int, *, min_voucher_delta: int
) -> dict[str, str]:
    """SES-31 `payment-need-voucher` data: all four fields as decimal/hex strings.

    The required amount also satisfies minVoucherDelta, so the client's voucher is not refused
    as too small (SES-23).
    """
    required = max(state.spent + cost, state.accepted_cumulative + min_voucher_delta)
    return {
        "channelId": state.channel_id,
        "requiredCumulative": str(required),
        "acceptedCumulative": str(state.accepted_cumulative),
        "deposit": str(state.deposit),
    }
