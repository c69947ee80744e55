"""Calldata, return values, events and revert errors of the TempoStreamChannel v1 escrow.

Pure functions on bytes (no RPC). The open/topUp/approve encoders live in mpp.session.tempo_tx
(the session layer builds those transactions) and are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from eth_abi.abi import decode as abi_decode
from eth_hash.auto import keccak

from mpp.core import errors
from mpp.session.escrow_abi import (
    CLOSE_GRACE_PERIOD,
    _selector,
    decode_approve,
    decode_open,
    decode_topup,
    encode_approve,
    encode_balance_of,
    encode_close,
    encode_close_capture,
    encode_compute_channel_id,
    encode_get_channel,
    encode_get_voucher_digest,
    encode_open,
    encode_request_close,
    encode_settle,
    encode_settle_capture,
    encode_topup,
    encode_transfer,
    encode_withdraw,
)
from mpp.session.ports import OnChainChannel

__all__ = [
    "CLOSE_GRACE_PERIOD",
    "ERROR_SELECTORS",
    "EVENT_TOPICS",
    "TRANSFER_TOPIC",
    "EscrowEvent",
    "decode_approve",
    "decode_channel",
    "decode_event",
    "decode_open",
    "decode_topup",
    "encode_approve",
    "encode_balance_of",
    "encode_close",
    "encode_close_capture",
    "encode_compute_channel_id",
    "encode_get_channel",
    "encode_get_voucher_digest",
    "encode_open",
    "encode_request_close",
    "encode_settle",
    "encode_settle_capture",
    "encode_topup",
    "encode_transfer",
    "encode_withdraw",
    "error_name",
    "revert_error",
]


_CHANNEL_TYPES: Final = [
    "bool", "uint64", "address", "address", "address", "address", "uint128", "uint128"
]  # fmt: skip


def decode_channel(channel_id: str, data: bytes) -> OnChainChannel:
    """Decode `getChannel(bytes32)` output, struct in ESC-02 order (finalized first)."""
    if len(data) != 32 * len(_CHANNEL_TYPES):
        raise ValueError("getChannel returned unexpected data")
    finalized, close_at, payer, payee, token, signer, deposit, settled = abi_decode(
        _CHANNEL_TYPES, data
    )
    return OnChainChannel(
        channel_id=channel_id.lower(),
        finalized=bool(finalized),
        close_requested_at=int(close_at),
        payer=str(payer).lower(),
        payee=str(payee).lower(),
        token=str(token).lower(),
        authorized_signer=str(signer).lower(),
        deposit=int(deposit),
        settled=int(settled),
    )


# --- events (ESC-04) ----------------------------------------------------------------------------

_EVENTS: Final[dict[str, tuple[str, list[str], list[str]]]] = {
    # name: (signature, names of the non-indexed fields, their types). First three are indexed.
    "ChannelOpened": (
        "ChannelOpened(bytes32,address,address,address,address,bytes32,uint256)",
        ["token", "authorizedSigner", "salt", "deposit"],
        ["address", "address", "bytes32", "uint256"],
    ),
    "Settled": (
        "Settled(bytes32,address,address,uint256,uint256,uint256)",
        ["cumulativeAmount", "deltaPaid", "newSettled"],
        ["uint256", "uint256", "uint256"],
    ),
    "CloseRequested": (
        "CloseRequested(bytes32,address,address,uint256)",
        ["closeGraceEnd"],
        ["uint256"],
    ),
    "CloseRequestCancelled": ("CloseRequestCancelled(bytes32,address,address)", [], []),
    "TopUp": (
        "TopUp(bytes32,address,address,uint256,uint256)",
        ["additionalDeposit", "newDeposit"],
        ["uint256", "uint256"],
    ),
    "ChannelClosed": (
        "ChannelClosed(bytes32,address,address,uint256,uint256)",
        ["settledToPayee", "refundedToPayer"],
        ["uint256", "uint256"],
    ),
    "ChannelExpired": ("ChannelExpired(bytes32,address,address)", [], []),
}
EVENT_TOPICS: Final[dict[str, str]] = {
    name: "0x" + keccak(sig.encode()).hex() for name, (sig, _, _) in _EVENTS.items()
}
_BY_TOPIC: Final = {topic: name for name, topic in EVENT_TOPICS.items()}
TRANSFER_TOPIC: Final = "0x" + keccak(b"Transfer(address,address,uint256)").hex()


@dataclass(frozen=True)
class EscrowEvent:
    name: str
    channel_id: str
    payer: str
    payee: str
    args: dict[str, Any]


def decode_event(log: dict[str, Any]) -> EscrowEvent | None:
    """Decode one escrow log ({"topics": [...hex], "data": hex}); None if not an escrow event."""
    topics = [str(t).lower() for t in log.get("topics", ())]
    if len(topics) != 4 or topics[0] not in _BY_TOPIC:
        return None
    name = _BY_TOPIC[topics[0]]
    _, names, types = _EVENTS[name]
    data = log.get("data", "0x")
    raw = bytes.fromhex(data[2:]) if isinstance(data, str) else bytes(data)
    values = abi_decode(types, raw) if types else ()
    args: dict[str, Any] = {}
    for key, value in zip(names, values, strict=True):
        if isinstance(value, bytes):
            value = "0x" + value.hex()
        elif isinstance(value, str):
            value = value.lower()
        args[key] = value
    return EscrowEvent(
        name=name,
        channel_id=topics[1],
        payer="0x" + topics[2][-40:],
        payee="0x" + topics[3][-40:],
        args=args,
    )


# --- errors (ESC-05, SES-40) --------------------------------------------------------------------

_ERROR_NAMES: Final = (
    "ChannelAlreadyExists", "ChannelNotFound", "ChannelFinalized", "InvalidSignature",
    "AmountExceedsDeposit", "AmountNotIncreasing", "NotPayer", "NotPayee", "TransferFailed",
    "CloseNotReady", "InvalidPayee", "DepositOverflow", "InvalidToken", "ZeroDeposit",
    "InvalidCaptureAmount",  # ESC-16/17, ours: not mapped, so it surfaces as TransactionReverted
)  # fmt: skip
ERROR_SELECTORS: Final[dict[str, str]] = {
    name: "0x" + _selector(name + "()").hex() for name in _ERROR_NAMES
}
_ERROR_BY_SELECTOR: Final = {sel: name for name, sel in ERROR_SELECTORS.items()}
_MAPPED: Final[dict[str, type[errors.PaymentError]]] = {
    "AmountExceedsDeposit": errors.AmountExceedsDeposit,
    "ChannelNotFound": errors.ChannelNotFound,
    "ChannelFinalized": errors.ChannelFinalized,
    "InvalidSignature": errors.InvalidSignature,
}


def error_name(revert_data: bytes | str | None) -> str | None:
    """The escrow error name for revert data, or None when unknown."""
    if revert_data is None:
        return None
    raw = bytes.fromhex(revert_data[2:]) if isinstance(revert_data, str) else revert_data
    return _ERROR_BY_SELECTOR.get("0x" + raw[:4].hex()) if len(raw) >= 4 else None


def revert_error(revert_data: bytes | str | None, **extensions: Any) -> errors.PaymentError:
    """Map an escrow revert to our hierarchy (SES-40); never surfaces the raw selector."""
    name = error_name(revert_data)
    if name in _MAPPED:
        return _MAPPED[name](f"escrow reverted: {name}", reason=name, **extensions)
    return errors.TransactionReverted(
        f"escrow reverted: {name or 'unknown reason'}", reason=name or "unknown", **extensions
    )
