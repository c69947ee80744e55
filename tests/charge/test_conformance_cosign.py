"""Fee-payer co-sign cases of the public MPP conformance suite (tempoxyz/mpp-tools,
conformance/vectors/tempo-fee-payer-cosign.json), each test named by its case: a sponsored
transaction (CHG-10: signed with the 0x00 placeholder and no fee token) is co-signed in the 0x78
domain only within the sponsor policy, and nothing else reaches the chain."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import rlp
from pytempo import Call

from mpp.charge.attribution import attribution_memo
from mpp.charge.server import ChargeServer
from mpp.charge.terms import ChargeTerms
from mpp.core.challenge import Challenge
from mpp.core.credential import Credential
from mpp.core.errors import VerificationFailed
from mpp.session.escrow_abi import encode_transfer, encode_transfer_with_memo
from mpp.session.ports import TxReceipt
from mpp.session.tempo_tx import (
    EXPIRING_NONCE_KEY,
    TX_TYPE,
    build_tempo_tx,
    decode_tempo_tx,
    sign_tempo_tx,
)
from mpp.store.memory import MemoryStore

PAYER_KEY = "0x" + "11" * 32
SPONSOR_KEY = "0x" + "22" * 32
TOKEN = "0x20c0000000000000000000000000000000000000"
RECIPIENT = "0x742d35cc6634c0532925a3b844bc9e7595f8fe00"
CHALLENGE, REALM = "challenge-123", "api.example.com"
TERMS = ChargeTerms(1_000_000, TOKEN, RECIPIENT, chain_id=42431, fee_payer=True)


class Chain:
    """Takes what the server broadcasts (the server under test is ours)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_raw_transaction(self, raw: bytes, *, timeout: float | None = None) -> TxReceipt:
        self.sent.append(raw)
        return TxReceipt(decode_tempo_tx(raw).tx_hash, 1, 1, 50_000)

    def transaction_receipt(self, tx_hash: str) -> TxReceipt | None:
        return None


def _memo_call(challenge_id: str = CHALLENGE) -> Call:
    memo = attribution_memo(challenge_id, REALM)
    return Call.create(to=TOKEN, data=encode_transfer_with_memo(RECIPIENT, 1_000_000, memo))


def _plain_call() -> Call:
    return Call.create(to=TOKEN, data=encode_transfer(RECIPIENT, 1_000_000))


def _raw(
    calls: tuple[Call, ...],
    *,
    gas: int = 1_000_000,
    nonce_key: int = EXPIRING_NONCE_KEY,
    valid_for: int = 60,
    edit: Callable[[list[Any]], None] | None = None,
) -> str:
    tx = build_tempo_tx(
        calls,
        chain_id=42431,
        gas_limit=gas,
        max_fee_per_gas=1,
        max_priority_fee_per_gas=1,
        nonce_key=nonce_key,
        nonce=0,
        valid_before=int(time.time()) + valid_for,
        awaiting_fee_payer=True,
    )
    raw = sign_tempo_tx(tx, PAYER_KEY)
    if edit is not None:  # a field the payer's SDK would not have written
        fields = rlp.decode(raw[1:])
        edit(fields)
        raw = bytes((TX_TYPE,)) + bytes(rlp.encode(fields))
    return "0x" + raw.hex()


def _verify(raw: str) -> Chain:
    chain = Chain()
    server = ChargeServer(MemoryStore(), chain, fee_payer_key=SPONSOR_KEY, fee_token=TOKEN)
    challenge = Challenge(CHALLENGE, REALM, "tempo", "charge", TERMS.to_request())
    server.verify(Credential(challenge, {"type": "transaction", "signature": raw}), TERMS)
    return chain


def test_case_valid_fee_payer_envelope_cosigned() -> None:
    chain = _verify(_raw((_memo_call(),)))
    [sent] = chain.sent
    final = decode_tempo_tx(sent)
    assert final.fee_token == TOKEN and final.fee_payer_signature is not None
    assert final.fields[5] == [] and len(final.calls) == 1


def _set_fee_token(fields: list[Any]) -> None:
    fields[10] = bytes.fromhex("99" * 20)


def _add_access_list(fields: list[Any]) -> None:
    fields[5] = [[bytes.fromhex(TOKEN[2:]), [bytes(32)]]]


@pytest.mark.parametrize(
    "case, raw, why",
    [
        ("plain_transfer_without_challenge_memo_rejected", lambda: _raw((_plain_call(),)),
         "attribution memo"),
        ("wrong_challenge_memo_rejected", lambda: _raw((_memo_call("challenge-999"),)),
         "attribution memo"),
        ("extra_call_rejected", lambda: _raw((_memo_call(), _plain_call())), "did not ask for"),
        ("gas_limit_above_policy_rejected", lambda: _raw((_memo_call(),), gas=2_000_001),
         "gas limit exceeds sponsor policy"),
        ("attacker_fee_token_rejected", lambda: _raw((_memo_call(),), edit=_set_fee_token),
         "must not include fee_token"),
        ("wrong_nonce_key_rejected", lambda: _raw((_memo_call(),), nonce_key=0),
         "must use expiring nonce key"),
        ("validity_window_above_policy_rejected", lambda: _raw((_memo_call(),), valid_for=1800),
         "validity window exceeds sponsor policy"),
        ("access_list_rejected", lambda: _raw((_memo_call(),), edit=_add_access_list),
         "access list is not allowed"),
    ],
)  # fmt: skip
def test_cases_rejected_before_cosigning(case: str, raw: Callable[[], str], why: str) -> None:
    chain = Chain()
    server = ChargeServer(MemoryStore(), chain, fee_payer_key=SPONSOR_KEY, fee_token=TOKEN)
    challenge = Challenge(CHALLENGE, REALM, "tempo", "charge", TERMS.to_request())
    with pytest.raises(VerificationFailed, match=why):
        server.verify(Credential(challenge, {"type": "transaction", "signature": raw()}), TERMS)
    assert chain.sent == []  # nothing co-signed, nothing sent
