"""Tempo charge verification cases of the public MPP conformance suite (tempoxyz/mpp-tools,
conformance/vectors/tempo-transaction-verification.json), each test named by its case.

Without a memo in the request, the primary transfer must carry the attribution memo bound to the
credential's challenge id and realm: a plain transfer, a foreign memo, or another challenge's or
realm's attribution memo does not pay (mpp.charge.attribution, mpp.charge.effects).
"""

from __future__ import annotations

import pytest

from mpp.charge.attribution import attribution_memo, bound_to
from mpp.charge.effects import (
    TRANSFER_TOPIC,
    TRANSFER_WITH_MEMO_TOPIC,
    check_effects,
    transfers_in_logs,
)
from mpp.charge.terms import ChargeTerms
from mpp.core.errors import VerificationFailed

CURRENCY = "0x1234567890123456789012345678901234567890"
RECIPIENT = "0x4567890123456789012345678901234567890123"
SENDER = "0x" + "abcd" * 10
CHALLENGE, REALM = "challenge-123", "api.example.com"
TERMS = ChargeTerms(1000, CURRENCY, RECIPIENT)


def _word(address: str) -> str:
    return "0x" + address[2:].rjust(64, "0")


def _log(memo: str | None) -> dict[str, object]:
    topics = [TRANSFER_TOPIC if memo is None else TRANSFER_WITH_MEMO_TOPIC, _word(SENDER),
              _word(RECIPIENT)] + ([memo] if memo is not None else [])  # fmt: skip
    return {"address": CURRENCY, "topics": topics, "data": "0x" + f"{1000:064x}"}


def _verify(memo: str | None) -> None:
    found = transfers_in_logs([_log(memo)], CURRENCY)
    check_effects(TERMS.transfers((CHALLENGE, REALM)), found, exact=False)


def test_case_matching_challenge_bound_memo() -> None:
    memo = attribution_memo(CHALLENGE, REALM)
    assert memo == "0xef1ed712011ece072f76bd8b82350e00000000000000000000eb18f2d4402269"
    assert bound_to(memo, CHALLENGE, REALM)
    _verify(memo)


@pytest.mark.parametrize(
    "case, memo",
    [
        ("plain_transfer_without_challenge_bound_memo", None),
        ("non_mpp_memo_rejected", "0x" + "ab" * 32),
        ("unrelated_challenge_memo_rejected", attribution_memo("challenge-456", REALM)),
        ("unrelated_realm_memo_rejected", attribution_memo(CHALLENGE, "other.example.com")),
    ],
)
def test_cases_that_do_not_pay(case: str, memo: str | None) -> None:
    with pytest.raises(VerificationFailed):
        _verify(memo)


def test_a_requested_memo_is_required_exactly_instead() -> None:
    memo = "0x" + "cd" * 32
    terms = ChargeTerms(1000, CURRENCY, RECIPIENT, memo=memo)
    found = transfers_in_logs([_log(memo)], CURRENCY)
    check_effects(terms.transfers((CHALLENGE, REALM)), found, exact=False)
    with pytest.raises(VerificationFailed):
        found = transfers_in_logs([_log(attribution_memo(CHALLENGE, REALM))], CURRENCY)
        check_effects(terms.transfers((CHALLENGE, REALM)), found, exact=False)
