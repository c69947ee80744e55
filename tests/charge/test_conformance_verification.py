"""Tempo charge verification cases of the public MPP conformance suite (tempoxyz/mpp-tools,
conformance/vectors/tempo-transaction-verification.json, tempo-receipt-verification.json and
tempo-proof.json), each test named by its case.

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
from mpp.charge.proof import proof_digest
from mpp.charge.server import ChargeServer
from mpp.charge.terms import ChargeTerms
from mpp.core.challenge import Challenge
from mpp.core.credential import Credential
from mpp.core.errors import VerificationFailed
from mpp.session.ports import TxReceipt
from mpp.store.memory import MemoryStore

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


# The suite's cases whose transfer must not count as the payment, in both files.
NOT_PAYING = [
    ("plain_transfer_without_challenge_bound_memo", None),
    ("non_mpp_memo_rejected", "0x" + "ab" * 32),
    ("unrelated_challenge_memo_rejected", attribution_memo("challenge-456", REALM)),
    ("unrelated_realm_memo_rejected", attribution_memo(CHALLENGE, "other.example.com")),
]


@pytest.mark.parametrize("case, memo", NOT_PAYING)
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


# --- tempo-receipt-verification.json: the same rule through a hash credential ------------------

TX = "0x" + "11" * 32


class ReceiptFixture:
    """The suite's receipt, served as the chain would (the server under test is ours)."""

    def __init__(self, memo: str | None) -> None:
        self.receipt = TxReceipt(TX, 1, 1, 21_000, (_log(memo),))

    def send_raw_transaction(self, raw: bytes, *, timeout: float | None = None) -> TxReceipt:
        raise AssertionError("a hash credential is never broadcast by the server")

    def transaction_receipt(self, tx_hash: str) -> TxReceipt | None:
        return self.receipt if tx_hash == TX else None


def _verify_hash(memo: str | None) -> dict[str, object]:
    challenge = Challenge(CHALLENGE, REALM, "tempo", "charge", TERMS.to_request(),
                          expires="2030-01-01T00:00:00Z")  # fmt: skip
    server = ChargeServer(MemoryStore(), ReceiptFixture(memo))
    charged = server.verify(Credential(challenge, {"type": "hash", "hash": TX}), TERMS)
    return charged.receipt


def test_receipt_case_matching_challenge_bound_memo() -> None:
    receipt = _verify_hash(attribution_memo(CHALLENGE, REALM))
    assert receipt["status"] == "success" and receipt["reference"] == TX


@pytest.mark.parametrize("case, memo", NOT_PAYING)
def test_receipt_cases_that_do_not_pay(case: str, memo: str | None) -> None:
    with pytest.raises(VerificationFailed):
        _verify_hash(memo)


# --- tempo-proof.json -------------------------------------------------------------------------


def test_case_zero_amount_proof_shape() -> None:
    """Domain {MPP, version 2, chainId}, Proof(string challengeId,string realm): the digest is
    the one viem's hashTypedData gives for the suite's typed data."""
    digest = proof_digest("proof-challenge-id", 42431, "api.example.com")
    assert digest.hex() == "eb9c94cf2466daa3766d7e6c14ebe83d5ab64a582cc67f3f60eaebc82bb53974"


def test_chg_09_proofs_of_both_shapes_verify_and_name_their_signer() -> None:
    from mpp.charge.proof import check_proof
    from mpp.session.voucher import private_key_bytes, sign_digest

    key = "0x" + "42" * 32
    from eth_account import Account

    address = Account.from_key(private_key_bytes(key)).address.lower()
    source = f"did:pkh:eip155:42431:{address}"
    for digest in (proof_digest("c-1", 42431, REALM), proof_digest("c-1", 42431)):
        assert check_proof(sign_digest(key, digest), "c-1", 42431, source, REALM) == address
    with pytest.raises(VerificationFailed):  # bound to another realm
        other = sign_digest(key, proof_digest("c-1", 42431, "elsewhere"))
        check_proof(other, "c-1", 42431, source, REALM)
