"""What a paid route demands in a `tempo`/`session` challenge: the challenge `request` object.

Rows: SES-01 (request fields), SES-02 (methodDetails), SES-05 (lowercase hex, decimal-string
amounts, `chainId` as a JSON number), SES-46 (refuse `sessionProtocol: "v2"`), AMB-14 (always
emit `chainId`, ignore unknown fields), CORE-41 (unknown fields are ignored).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from mpp.core.amounts import decimal_amount
from mpp.core.errors import MalformedCredential
from mpp.session.voucher import DEFAULT_DOMAIN_NAME, MAX_AMOUNT

__all__ = [
    "DEFAULT_CHAIN_ID",
    "SessionTerms",
    "TermsError",
    "parse_address",
    "parse_amount",
    "parse_bytes32",
]

# SES-02: the tempo session default when a challenge omits chainId (we always emit it).
DEFAULT_CHAIN_ID: Final = 4217

_ADDRESS = re.compile(r"0[xX][0-9a-fA-F]{40}")
_BYTES32 = re.compile(r"0[xX][0-9a-fA-F]{64}")


class TermsError(MalformedCredential, ValueError):
    """A challenge request (or a payload field) is not well formed."""


def parse_amount(value: object, what: str) -> int:
    """A decimal string of base units in 0..2^128-1 (SES-05/SES-24); no floats, no signs."""
    amount = decimal_amount(value)
    if amount is None:
        raise TermsError(f"{what} must be a decimal string of base units in uint128")
    return amount


def parse_address(value: object, what: str) -> str:
    """A 20-byte 0x address, returned lowercase (compared as bytes, SES-01/05)."""
    if not isinstance(value, str) or _ADDRESS.fullmatch(value) is None:
        raise TermsError(f"{what} must be a 0x-prefixed 20-byte hex address")
    return value.lower()


def parse_bytes32(value: object, what: str) -> str:
    """A 32-byte 0x hex value (channel id, salt), returned lowercase (SES-05)."""
    if not isinstance(value, str) or _BYTES32.fullmatch(value) is None:
        raise TermsError(f"{what} must be 0x-prefixed 32-byte hex")
    return value.lower()


@dataclass(frozen=True)
class SessionTerms:
    """A route's price and settlement coordinates; addresses lowercase, amounts int base units."""

    amount: int  # price per unit
    currency: str  # TIP-20 token
    recipient: str  # the on-chain payee
    escrow_contract: str
    chain_id: int
    unit_type: str | None = None
    suggested_deposit: int | None = None
    fee_payer: bool = False
    min_voucher_delta: int = 0
    session_protocol: str = "v1"
    channel_id: str | None = None
    # Not on the wire: the EIP-712 domain name of this method profile (SES-08).
    domain_name: str = DEFAULT_DOMAIN_NAME

    def __post_init__(self) -> None:
        for name in ("amount", "min_voucher_delta"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= MAX_AMOUNT:
                raise TermsError(f"{name} must be an int in 0..2^128-1")
        if self.suggested_deposit is not None and (
            type(self.suggested_deposit) is not int or not 0 < self.suggested_deposit <= MAX_AMOUNT
        ):
            raise TermsError("suggested_deposit must be a positive int")
        if type(self.chain_id) is not int or self.chain_id <= 0:
            raise TermsError("chain_id must be a positive int")
        if self.session_protocol != "v1":
            raise TermsError("only sessionProtocol v1 is supported (SES-46)")
        object.__setattr__(self, "currency", parse_address(self.currency, "currency"))
        object.__setattr__(self, "recipient", parse_address(self.recipient, "recipient"))
        object.__setattr__(
            self, "escrow_contract", parse_address(self.escrow_contract, "escrowContract")
        )
        if self.channel_id is not None:
            object.__setattr__(self, "channel_id", parse_bytes32(self.channel_id, "channelId"))

    def with_channel(self, channel_id: str | None) -> SessionTerms:
        """The same terms suggesting a channel to resume (SES-04)."""
        return dataclasses.replace(self, channel_id=channel_id)

    def same_route(self, other: SessionTerms) -> bool:
        """CORE-20: everything that binds payment to this route, except the suggested channel."""
        return self.with_channel(None) == other.with_channel(None)

    def same_payee(self, other: SessionTerms) -> bool:
        """Paid to the same party: recipient, token, escrow and chain."""
        keys = ("recipient", "currency", "escrow_contract", "chain_id")
        return all(getattr(self, k) == getattr(other, k) for k in keys)

    def to_request(self) -> dict[str, Any]:
        """The challenge `request` object (to be JCS-serialized by the codec)."""
        details: dict[str, Any] = {
            "escrowContract": self.escrow_contract,
            "chainId": self.chain_id,  # JSON number, always emitted (AMB-14)
            "feePayer": self.fee_payer,
            "sessionProtocol": self.session_protocol,
        }
        if self.min_voucher_delta:
            details["minVoucherDelta"] = str(self.min_voucher_delta)
        if self.channel_id is not None:
            details["channelId"] = self.channel_id
        request: dict[str, Any] = {
            "amount": str(self.amount),
            "currency": self.currency,
            "recipient": self.recipient,
            "methodDetails": details,
        }
        if self.unit_type is not None:
            request["unitType"] = self.unit_type
        if self.suggested_deposit is not None:
            request["suggestedDeposit"] = str(self.suggested_deposit)
        return request

    @classmethod
    def from_request(
        cls, request: Mapping[str, Any], *, domain_name: str = DEFAULT_DOMAIN_NAME
    ) -> SessionTerms:
        """Parse and validate a challenge `request`; unknown fields are ignored (CORE-41)."""
        if not isinstance(request, Mapping):
            raise TermsError("request must be a JSON object")
        details = request.get("methodDetails", {})
        if not isinstance(details, Mapping):
            raise TermsError("methodDetails must be a JSON object")
        protocol = details.get("sessionProtocol", "v1")  # absent → v1 (SES-02)
        if protocol != "v1":
            raise TermsError(f"unsupported sessionProtocol {protocol!r} (SES-46)")
        chain_id = details.get("chainId", DEFAULT_CHAIN_ID)
        if type(chain_id) is not int or chain_id <= 0:
            raise TermsError("methodDetails.chainId must be a positive JSON number")
        fee_payer = details.get("feePayer", False)
        if not isinstance(fee_payer, bool):
            raise TermsError("methodDetails.feePayer must be a boolean")
        unit_type = request.get("unitType")
        if unit_type is not None and not isinstance(unit_type, str):
            raise TermsError("unitType must be a string")
        suggested = request.get("suggestedDeposit")
        delta = details.get("minVoucherDelta")
        channel = details.get("channelId")
        return cls(
            amount=parse_amount(request.get("amount"), "amount"),
            currency=parse_address(request.get("currency"), "currency"),
            recipient=parse_address(request.get("recipient"), "recipient"),
            escrow_contract=parse_address(details.get("escrowContract"), "escrowContract"),
            chain_id=chain_id,
            unit_type=unit_type,
            suggested_deposit=None
            if suggested is None
            else parse_amount(suggested, "suggestedDeposit"),
            fee_payer=fee_payer,
            min_voucher_delta=0 if delta is None else parse_amount(delta, "minVoucherDelta"),
            session_protocol="v1",
            channel_id=None if channel is None else parse_bytes32(channel, "channelId"),
            domain_name=domain_name,
        )
