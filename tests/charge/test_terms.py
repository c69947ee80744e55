"""The tempo charge request (mpp.charge.terms): CHG-01, CHG-05, CHG-06, pure."""

from __future__ import annotations

from typing import Any

import pytest

from mpp.charge.terms import DEFAULT_CHAIN_ID, ChargeTerms, Split, Transfer
from mpp.session.terms import TermsError

TOKEN = "0x20c0000000000000000000000000000000000000"
PAYEE = "0x742d35cc6634c0532925a3b844bc9e7595f8fe00"
PLATFORM = "0xa1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2"
MEMO = "0x" + "00" * 28 + "deadbeef"


def _request(**details: Any) -> dict[str, Any]:
    return {"amount": "1000000", "currency": TOKEN, "recipient": PAYEE, "methodDetails": details}


def test_chg_01_round_trip_and_no_expires_in_the_request() -> None:
    terms = ChargeTerms(
        1_000_000, TOKEN, PAYEE, chain_id=4217, description="d", external_id="o-1",
        fee_payer=True, memo=MEMO, splits=(Split(PLATFORM, 50_000),), supported_modes=("pull",),
    )  # fmt: skip
    request = terms.to_request()
    assert "expires" not in request and request["amount"] == "1000000"
    assert ChargeTerms.from_request(request) == terms


def test_chg_05_defaults() -> None:
    terms = ChargeTerms.from_request({"amount": "5", "currency": TOKEN, "recipient": PAYEE})
    assert terms.chain_id == DEFAULT_CHAIN_ID and not terms.fee_payer
    assert terms.allows("pull") and terms.allows("push")
    assert not ChargeTerms.from_request(_request(supportedModes=["pull"])).allows("push")


def test_chg_06_split_effects_and_primary_remainder() -> None:
    terms = ChargeTerms.from_request(
        _request(memo=MEMO, splits=[{"amount": "50000", "recipient": PLATFORM, "memo": MEMO}])
    )
    assert terms.transfers() == (Transfer(PAYEE, 950_000, MEMO), Transfer(PLATFORM, 50_000, MEMO))


@pytest.mark.parametrize(
    "request_",
    [
        {"amount": "1.5", "currency": TOKEN, "recipient": PAYEE},
        {"amount": "\uff11", "currency": TOKEN, "recipient": PAYEE},  # fullwidth digit
        {"amount": "1", "currency": "pathUSD", "recipient": PAYEE},
        {"amount": "1", "currency": TOKEN},  # CHG-01: recipient is required for tempo
        _request(chainId="42431"),
        _request(feePayer="yes"),
        _request(memo="0x1234"),
        _request(splits=[]),
        _request(splits=[{"amount": "0", "recipient": PLATFORM}]),
        _request(splits=[{"amount": "1000000", "recipient": PLATFORM}]),  # sum == amount
        _request(splits=[{"amount": "1", "recipient": PLATFORM}] * 11),
        _request(supportedModes=[]),
        _request(supportedModes=["card"]),
    ],
)
def test_chg_01_05_06_bad_requests_are_refused(request_: dict[str, Any]) -> None:
    with pytest.raises(TermsError):
        ChargeTerms.from_request(request_)
