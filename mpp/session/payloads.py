"""Session credential payloads (tempo v1): schema and format checks, before any ECDSA.

Rows: SES-13 (open), SES-17 (topUp), SES-19 (voucher), SES-37 (close), SES-41 (unknown action),
SES-42 (validate presence, hex and lengths before ECDSA), SES-24 (uint128 cap), AMB-04 (schema
errors → 402 malformed-credential), CORE-41 (unknown fields ignored).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from mpp.core.errors import MalformedCredential
from mpp.session.terms import parse_address, parse_amount, parse_bytes32

__all__ = [
    "ClosePayload",
    "OpenPayload",
    "Payload",
    "TopUpPayload",
    "VoucherPayload",
    "parse_payload",
]

# A signed approve+open batch is a few hundred bytes; refuse anything absurd before decoding.
MAX_TX_BYTES: Final = 16_384
_SIGNATURE = re.compile(r"0[xX](?:[0-9a-fA-F]{130}|[0-9a-fA-F]{128})")
_HEX = re.compile(r"0[xX](?:[0-9a-fA-F]{2})+")


@dataclass(frozen=True)
class VoucherPayload:
    channel_id: str
    cumulative_amount: int
    signature: str  # 0x + 65 or 64 bytes; checked for low-s/v by the verifier


@dataclass(frozen=True)
class ClosePayload:
    channel_id: str
    cumulative_amount: int
    signature: str


@dataclass(frozen=True)
class OpenPayload:
    channel_id: str
    transaction: bytes
    cumulative_amount: int
    signature: str
    authorized_signer: str | None  # informative only: the tx calldata is authoritative (SES-13)


@dataclass(frozen=True)
class TopUpPayload:
    channel_id: str
    transaction: bytes
    additional_deposit: int


Payload = OpenPayload | TopUpPayload | VoucherPayload | ClosePayload


def _signature(value: object) -> str:
    if not isinstance(value, str) or _SIGNATURE.fullmatch(value) is None:
        raise MalformedCredential("signature must be 0x-prefixed 65- or 64-byte hex")
    return value.lower()


def _transaction(payload: Mapping[str, Any]) -> bytes:
    if payload.get("type") != "transaction":
        raise MalformedCredential("only type 'transaction' is supported for tempo open/topUp")
    value = payload.get("transaction")
    if not isinstance(value, str) or len(value) > 2 + 2 * MAX_TX_BYTES:
        raise MalformedCredential("transaction must be 0x-prefixed hex of bounded size")
    if _HEX.fullmatch(value) is None:
        raise MalformedCredential("transaction must be 0x-prefixed hex")
    return bytes.fromhex(value[2:])


def parse_payload(payload: Mapping[str, Any]) -> Payload:
    """Validate a credential payload's shape; every failure is MalformedCredential (402)."""
    if not isinstance(payload, Mapping):
        raise MalformedCredential("payload must be a JSON object")
    action = payload.get("action")
    if action not in ("open", "topUp", "voucher", "close"):
        raise MalformedCredential("unknown session action (SES-41)")
    try:
        channel = parse_bytes32(payload.get("channelId"), "channelId")
        if action == "voucher" or action == "close":
            cls = VoucherPayload if action == "voucher" else ClosePayload
            return cls(
                channel_id=channel,
                cumulative_amount=parse_amount(payload.get("cumulativeAmount"), "cumulativeAmount"),
                signature=_signature(payload.get("signature")),
            )
        if action == "open":
            signer = payload.get("authorizedSigner")
            return OpenPayload(
                channel_id=channel,
                transaction=_transaction(payload),
                cumulative_amount=parse_amount(payload.get("cumulativeAmount"), "cumulativeAmount"),
                signature=_signature(payload.get("signature")),
                authorized_signer=None
                if signer is None
                else parse_address(signer, "authorizedSigner"),
            )
        else:
            additional = parse_amount(payload.get("additionalDeposit"), "additionalDeposit")
            if additional == 0:
                raise MalformedCredential("additionalDeposit must be positive")
            return TopUpPayload(
                channel_id=channel, transaction=_transaction(payload), additional_deposit=additional
            )
    except MalformedCredential:
        raise
    except ValueError as exc:  # a parser below us that speaks plain ValueError
        raise MalformedCredential(str(exc)) from None
