"""The payer: spending policy before signing, persisted cumulative amounts, receipts, close.

Row IDs: CORE-39 (validate before paying), SES-04 (reuse), SES-07 (fresh salt), SES-13/14 (open
payload and its transaction), SES-46 (v2 declined), AMB-02 (close at max(spent, settled)),
AMB-09 (first voucher for one unit), AMB-13 (receipt checks like the official client).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mpp.session.payer import DepositExhausted, Payer, PayerError, ReceiptRejected
from mpp.session.policy import PolicyViolation, SpendingPolicy
from mpp.session.ports import OnChainChannel
from mpp.session.tempo_tx import EXPIRING_NONCE_KEY, check_open_tx, decode_tempo_tx
from mpp.session.terms import SessionTerms, TermsError
from mpp.session.voucher import recover_voucher_signer
from mpp.store.payer_records import PayerRecords
from tests.session._workers import (
    CHAIN_ID,
    DELEGATE,
    DELEGATE_KEY,
    ESCROW,
    NOW,
    PAYEE,
    PAYER,
    PAYER_KEY,
    TOKEN,
    ZERO,
    terms,
)


def payer(path: Path, **kw: Any) -> Payer:
    return Payer(PAYER_KEY, records_path=path / "payer.db", now=lambda: NOW, **kw)


def receipt(cid: str, accepted: int, spent: int) -> dict[str, Any]:
    return {
        "method": "tempo",
        "intent": "session",
        "status": "success",
        "channelId": cid,
        "reference": cid,
        "acceptedCumulative": str(accepted),
        "spent": str(spent),
    }


@pytest.mark.parametrize(
    ("policy", "route"),
    [
        (SpendingPolicy(max_amount_per_unit=24), terms()),
        (SpendingPolicy(max_deposit=999_999), terms()),
        (SpendingPolicy(allowed_recipients=frozenset({DELEGATE})), terms()),
        (SpendingPolicy(allowed_tokens=frozenset({ESCROW})), terms()),
        (SpendingPolicy(allowed_chain_ids=frozenset({1})), terms()),
        (SpendingPolicy(allowed_escrows=frozenset({TOKEN})), terms()),
        (SpendingPolicy(max_deposit=10), terms(suggested_deposit=None)),  # 10 < one unit
    ],
    ids=["price", "deposit", "recipient", "token", "chain", "escrow", "below-one-unit"],
)
def test_core_39_policy_refuses_before_signing(
    tmp_path: Path, policy: SpendingPolicy, route: SessionTerms
) -> None:
    p = payer(tmp_path, policy=policy)
    with pytest.raises(PolicyViolation):
        p.open_payload(route, 1_000_000 if policy.max_deposit == 999_999 else None)
    assert PayerRecords(tmp_path / "payer.db").all() == []  # nothing signed, nothing stored


def test_policy_allows_mixed_case_allow_lists(tmp_path: Path) -> None:
    policy = SpendingPolicy(
        max_amount_per_unit=25,
        max_deposit=1_000_000,
        allowed_recipients=frozenset({"0x" + PAYEE[2:].upper()}),
        allowed_tokens=frozenset({TOKEN}),
        allowed_chain_ids=frozenset({CHAIN_ID}),
        allowed_escrows=frozenset({ESCROW}),
    )
    assert payer(tmp_path, policy=policy).open_payload(terms())["action"] == "open"
    with pytest.raises(PolicyViolation):  # a topUp beyond the maximum deposit
        cid = PayerRecords(tmp_path / "payer.db").all()[0].channel_id
        payer(tmp_path, policy=policy).topup_payload(cid, 1)


def test_ses_46_v2_challenge_declined() -> None:
    req = terms().to_request()
    req["methodDetails"]["sessionProtocol"] = "v2"
    with pytest.raises(TermsError):
        SessionTerms.from_request(req)


def test_ses_13_14_amb_09_open_payload_shape(tmp_path: Path) -> None:
    p = payer(tmp_path)
    payload = p.open_payload(terms(), 500_000, expires=NOW + 10)
    assert set(payload) == {
        "action",
        "type",
        "channelId",
        "transaction",
        "authorizedSigner",
        "cumulativeAmount",
        "signature",
    }
    assert payload["cumulativeAmount"] == "25"  # one unit, like the TypeScript client
    decoded = decode_tempo_tx(payload["transaction"])
    assert decoded.sender == PAYER
    assert (decoded.nonce_key, decoded.nonce) == (EXPIRING_NONCE_KEY, 0)
    assert decoded.valid_before == NOW + 10  # capped by the challenge expiry
    assert decoded.fee_token == TOKEN and not decoded.sponsored  # self-paid in the currency
    call = check_open_tx(decoded, escrow=ESCROW, token=TOKEN, payee=PAYEE, chain_id=CHAIN_ID)
    assert call.channel_id == payload["channelId"] and call.deposit == 500_000
    signer = recover_voucher_signer(
        payload["channelId"], 25, payload["signature"], chain_id=CHAIN_ID, escrow=ESCROW
    )
    assert signer == PAYER
    again = p.open_payload(terms(), 500_000)
    assert again["channelId"] != payload["channelId"]  # SES-07: fresh salt each time


def test_open_sponsored_and_delegated(tmp_path: Path) -> None:
    p = Payer(PAYER_KEY, records_path=tmp_path / "p.db", voucher_key=DELEGATE_KEY, now=lambda: NOW)
    payload = p.open_payload(terms(fee_payer=True))
    decoded = decode_tempo_tx(payload["transaction"])
    assert decoded.awaiting_fee_payer and decoded.fee_token is None
    call = check_open_tx(decoded, escrow=ESCROW, token=TOKEN, payee=PAYEE, chain_id=CHAIN_ID)
    assert call.authorized_signer == DELEGATE == payload["authorizedSigner"]
    v = p.voucher_payload(payload["channelId"], 100)
    signer = recover_voucher_signer(
        v["channelId"], 100, v["signature"], chain_id=CHAIN_ID, escrow=ESCROW
    )
    assert signer == DELEGATE
    with pytest.raises(PolicyViolation):  # asking for sponsorship the server does not offer
        p.open_payload(terms(), fee_sponsored=True)


def test_restart_resumes_channel_and_cumulative(tmp_path: Path) -> None:
    first = payer(tmp_path)
    cid = first.open_payload(terms(), 1000)["channelId"]
    assert first.voucher_payload(cid, 600)["cumulativeAmount"] == "600"
    first.records.close()  # type: ignore[attr-defined]

    restarted = payer(tmp_path)
    rec = restarted.channel(cid)
    assert rec is not None and (rec.cumulative, rec.deposit, rec.status) == (600, 1000, "pending")
    # never below what was already signed: the same voucher again (server: idempotent)
    again = restarted.voucher_payload(cid, 300)
    assert again["cumulativeAmount"] == "600" and again["signature"] == rec.signature
    assert restarted.voucher_payload(cid, 1000)["cumulativeAmount"] == "1000"
    with pytest.raises(DepositExhausted):  # never above the deposit: top up first (SES-31)
        restarted.voucher_payload(cid, 1001)


def test_receipts_validated_like_the_official_client(tmp_path: Path) -> None:
    p = payer(tmp_path)
    cid = p.open_payload(terms(), 1000)["channelId"]
    p.voucher_payload(cid, 400)
    with pytest.raises(ReceiptRejected):
        p.record_receipt(receipt(cid, 401, 0))  # more accepted than we ever signed
    with pytest.raises(ReceiptRejected):
        p.record_receipt(receipt(cid, 300, 301))  # spent above accepted
    with pytest.raises(ReceiptRejected):
        p.record_receipt(receipt("0x" + "99" * 32, 1, 0))
    rec = p.record_receipt(receipt(cid, 400, 150))
    assert (rec.accepted, rec.spent, rec.status) == (400, 150, "open")


def test_amb_02_close_signed_at_spent(tmp_path: Path) -> None:
    p = payer(tmp_path)
    cid = p.open_payload(terms(), 1000)["channelId"]
    p.voucher_payload(cid, 400)
    p.record_receipt(receipt(cid, 400, 150))
    close = p.close_payload(cid)
    assert close["action"] == "close" and close["cumulativeAmount"] == "150"
    signer = recover_voucher_signer(cid, 150, close["signature"], chain_id=CHAIN_ID, escrow=ESCROW)
    assert signer == PAYER
    # the server's `spent` problem extension may be used to re-sign, never above our cumulative
    assert p.close_payload(cid, spent=175)["cumulativeAmount"] == "175"
    with pytest.raises(PayerError):
        p.close_payload(cid, spent=401)
    assert p.channel(cid).status == "closing"  # type: ignore[union-attr]


def test_ses_04_find_reusable_channel(tmp_path: Path) -> None:
    p = payer(tmp_path)
    route = terms()
    assert p.find_reusable_channel(route, 25) is None
    a = p.open_payload(route, 1000)["channelId"]
    assert p.find_reusable_channel(route, 25) is None  # never confirmed by a receipt
    p.record_receipt(receipt(a, 25, 0))
    b = p.open_payload(route, 1000)["channelId"]
    p.record_receipt(receipt(b, 25, 0))
    assert p.find_reusable_channel(route.with_channel(a), 25).channel_id == a  # type: ignore[union-attr]
    assert p.find_reusable_channel(route.with_channel(b), 25).channel_id == b  # type: ignore[union-attr]
    p.voucher_payload(a, 1000)
    p.record_receipt(receipt(a, 1000, 990))
    found = p.find_reusable_channel(route.with_channel(a), 25)
    assert found is not None and found.channel_id == b  # a is drained: 1000 − 990 < 25
    other = terms(recipient=DELEGATE)
    assert p.find_reusable_channel(other, 1) is None


def test_payer_records_wal_normal_and_no_op_updates_write_nothing(tmp_path: Path) -> None:
    """The payer file is a cache the server's receipts re-sync (mpp.store.payer_records):
    WAL + synchronous=NORMAL, and a repeated receipt is not written again."""
    p = payer(tmp_path)
    records = p.records
    assert isinstance(records, PayerRecords)
    conn = records._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    cid = p.open_payload(terms(), 1000)["channelId"]
    p.voucher_payload(cid, 400)
    p.record_receipt(receipt(cid, 400, 150))
    writes = conn.total_changes
    p.record_receipt(receipt(cid, 400, 150))  # the same counters again
    p.record_receipt(receipt(cid, 300, 100))  # an older receipt arriving late
    p.voucher_payload(cid, 350)  # covered by what we already signed
    assert conn.total_changes == writes
    p.record_receipt(receipt(cid, 400, 175))
    assert conn.total_changes == writes + 1


def test_open_initial_voucher_may_cover_a_prepay_window(tmp_path: Path) -> None:
    p = payer(tmp_path)
    assert p.open_payload(terms(), 1000, initial=525)["cumulativeAmount"] == "525"
    assert p.open_payload(terms(), 1000, initial=5000)["cumulativeAmount"] == "1000"  # deposit
    assert p.open_payload(terms(), 1000, initial=0)["cumulativeAmount"] == "25"  # one unit


def test_server_accepted_above_our_record_sets_the_channel_aside(tmp_path: Path) -> None:
    """After a power loss rolled back our last voucher record, the server's stale-voucher
    answer holds more than we recorded: that channel is never reused nor signed on again."""
    p = payer(tmp_path)
    cid = p.open_payload(terms(), 1000)["channelId"]
    p.voucher_payload(cid, 400)
    assert p.note_server_accepted(cid, 400).status == "pending"  # type: ignore[union-attr]
    assert p.note_server_accepted(cid, 401).status == "stale"  # type: ignore[union-attr]
    assert p.find_reusable_channel(terms(), 25) is None
    with pytest.raises(PayerError):
        p.voucher_payload(cid, 500)
    assert p.note_server_accepted("0x" + "99" * 32, 1) is None


class CountingChain:
    def __init__(self) -> None:
        self.reads = 0

    def read_channel(self, escrow: str, channel_id: str) -> OnChainChannel:
        self.reads += 1
        return OnChainChannel(channel_id, False, 0, PAYER, PAYEE, TOKEN, ZERO, 1000, 0)

    def base_fee(self) -> int:
        return 1

    def latest_timestamp(self) -> int:
        return NOW


def test_ses_04_chain_sync_at_most_once_per_ttl(tmp_path: Path) -> None:
    chain = CountingChain()
    p = payer(tmp_path, chain=chain, sync_ttl=3600)
    cid = p.open_payload(terms(), 1000)["channelId"]
    p.record_receipt(receipt(cid, 25, 0))
    for _ in range(5):
        assert p.find_reusable_channel(terms(), 25).channel_id == cid  # type: ignore[union-attr]
    assert chain.reads == 1
    p.sync_ttl = 0
    p.find_reusable_channel(terms(), 25)
    assert chain.reads == 2
