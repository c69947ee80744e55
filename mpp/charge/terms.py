"""The tempo charge request (CHG-01, CHG-05, CHG-06): one TIP-20 payment per request.

Pure: parsing and checking the challenge's `request` object, and the payment effects it asks
for. `amount` is the total the payer pays; each split recipient gets its amount and the primary
`recipient` the rest, which is never zero (the splits sum to less than `amount`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from mpp.session.terms import TermsError, parse_address, parse_amount, parse_bytes32

__all__ = [
    "DEFAULT_CHAIN_ID",
    "MAX_SPLITS",
    "MODES",
    "ChargeTerms",
    "Split",
    "Transfer",
]

DEFAULT_CHAIN_ID: Final = 42431  # CHG-05: a request without methodDetails.chainId
MAX_SPLITS: Final = 10  # CHG-06: SHOULD at most 10; we refuse more (gas within one block)
MODES: Final = ("pull", "push")


@dataclass(frozen=True)
class Transfer:
    """One payment effect: `amount` of the currency to `recipient`, with `memo` when set.
    As a requirement, `bound` = (challenge id, realm) asks for the attribution memo of that
    challenge instead of a fixed memo (mpp.charge.attribution)."""

    recipient: str
    amount: int
    memo: str | None = None
    bound: tuple[str, str] | None = None


@dataclass(frozen=True)
class Split:
    recipient: str
    amount: int
    memo: str | None = None


@dataclass(frozen=True)
class ChargeTerms:
    amount: int
    currency: str
    recipient: str
    chain_id: int = DEFAULT_CHAIN_ID
    description: str | None = None
    external_id: str | None = None
    fee_payer: bool = False
    memo: str | None = None
    splits: tuple[Split, ...] = ()
    supported_modes: tuple[str, ...] | None = None  # None: both (CHG-05)

    def __post_init__(self) -> None:
        if len(self.splits) > MAX_SPLITS:
            raise TermsError(f"at most {MAX_SPLITS} splits")
        if any(s.amount <= 0 for s in self.splits):
            raise TermsError("every split amount must be greater than zero")
        if self.splits and sum(s.amount for s in self.splits) >= self.amount:
            raise TermsError("splits must sum to less than amount")  # CHG-06
        if self.supported_modes is not None and (
            not self.supported_modes or any(m not in MODES for m in self.supported_modes)
        ):
            raise TermsError("supportedModes must list pull and/or push")

    def allows(self, mode: str) -> bool:
        """A non-zero charge may be paid in `mode` ("pull": a signed transaction for the
        server to broadcast; "push": the hash of one the payer broadcast)."""
        return self.supported_modes is None or mode in self.supported_modes

    def transfers(self, bound: tuple[str, str] | None = None) -> tuple[Transfer, ...]:
        """The payment effects: the primary recipient's remainder first, then the splits.
        `bound` (challenge id, realm): a primary transfer without a requested memo must carry
        that challenge's attribution memo (what a server verifies)."""
        rest = self.amount - sum(s.amount for s in self.splits)
        primary = Transfer(self.recipient, rest, self.memo, None if self.memo else bound)
        return (primary, *(Transfer(s.recipient, s.amount, s.memo) for s in self.splits))

    # --- wire ------------------------------------------------------------------------------------

    def to_request(self) -> dict[str, Any]:
        """The challenge `request` object (JCS-serialized by the codec). Never `expires`
        (CHG-01): the challenge's auth-param carries it."""
        details: dict[str, Any] = {"chainId": self.chain_id}
        if self.fee_payer:
            details["feePayer"] = True
        if self.memo is not None:
            details["memo"] = self.memo
        if self.splits:
            details["splits"] = [_split_json(s) for s in self.splits]
        if self.supported_modes is not None:
            details["supportedModes"] = list(self.supported_modes)
        request: dict[str, Any] = {
            "amount": str(self.amount),
            "currency": self.currency,
            "recipient": self.recipient,
            "methodDetails": details,
        }
        if self.description is not None:
            request["description"] = self.description
        if self.external_id is not None:
            request["externalId"] = self.external_id
        return request

    @classmethod
    def from_request(cls, request: Mapping[str, Any]) -> ChargeTerms:
        """TermsError for anything a payer must not pay (CHG-01, CHG-05, CHG-06)."""
        details = request.get("methodDetails", {})
        if not isinstance(details, Mapping):
            raise TermsError("methodDetails must be an object")
        chain_id = details.get("chainId", DEFAULT_CHAIN_ID)
        if not isinstance(chain_id, int) or isinstance(chain_id, bool) or chain_id <= 0:
            raise TermsError("methodDetails.chainId must be a positive integer")
        fee_payer = details.get("feePayer", False)
        if not isinstance(fee_payer, bool):
            raise TermsError("methodDetails.feePayer must be a boolean")
        memo = details.get("memo")
        splits = details.get("splits")
        if splits is not None and (not isinstance(splits, list) or not splits):
            raise TermsError("methodDetails.splits must be a non-empty array")
        modes = details.get("supportedModes")
        if modes is not None and (
            not isinstance(modes, list) or not all(isinstance(m, str) for m in modes)
        ):
            raise TermsError("methodDetails.supportedModes must be an array of strings")
        return cls(
            amount=parse_amount(request.get("amount"), "amount"),
            currency=parse_address(request.get("currency"), "currency"),
            recipient=parse_address(request.get("recipient"), "recipient"),
            chain_id=chain_id,
            description=_optional_str(request, "description"),
            external_id=_optional_str(request, "externalId"),
            fee_payer=fee_payer,
            memo=None if memo is None else parse_bytes32(memo, "methodDetails.memo"),
            splits=tuple(_split(s) for s in splits or ()),
            supported_modes=None if modes is None else tuple(modes),
        )


def _optional_str(request: Mapping[str, Any], name: str) -> str | None:
    value = request.get(name)
    if value is not None and not isinstance(value, str):
        raise TermsError(f"{name} must be a string")
    return value


def _split(value: object) -> Split:
    if not isinstance(value, Mapping):
        raise TermsError("each split must be an object")
    memo = value.get("memo")
    return Split(
        recipient=parse_address(value.get("recipient"), "split recipient"),
        amount=parse_amount(value.get("amount"), "split amount"),
        memo=None if memo is None else parse_bytes32(memo, "split memo"),
    )


def _split_json(split: Split) -> dict[str, str]:
    out = {"amount": str(split.amount), "recipient": split.recipient}
    if split.memo is not None:
        out["memo"] = split.memo
    return out
