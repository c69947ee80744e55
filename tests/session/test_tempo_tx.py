"""0x76 open/topUp transactions: build, decode, recover, check (SES-03, SES-13/14/17/18)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import rlp
from eth_account import Account
from eth_hash.auto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st
from pytempo import Call, TempoTransaction

from mpp.core.errors import VerificationFailed
from mpp.session.tempo_tx import (
    EXPIRING_NONCE_KEY,
    TempoTxError,
    build_tempo_tx,
    check_open_tx,
    check_topup_tx,
    cosign_as_fee_payer,
    decode_tempo_tx,
    encode_approve,
    encode_open,
    encode_topup,
    fee_payer_of,
    open_calls,
    sign_tempo_tx,
    topup_calls,
)
from mpp.session.voucher import SECP256K1_N, channel_id

PAYER_KEY = "0x" + "a1" * 32
SPONSOR_KEY = "0x" + "b2" * 32
PAYER = Account.from_key(PAYER_KEY).address.lower()
SPONSOR = Account.from_key(SPONSOR_KEY).address.lower()
ESCROW = "0x" + "e5" * 20
TOKEN = "0x20c0000000000000000000000000000000000000"
OTHER_TOKEN = "0x20c0000000000000000000000000000000000001"
PAYEE = "0x" + "be" * 20
SALT = "0x" + "5a" * 32
CHAIN = 31337
EXPIRES = 1_800_000_000
ZERO = "0x" + "00" * 20


def tx_for(calls: tuple[Call, ...], **kw: Any) -> TempoTransaction:
    opts: dict[str, Any] = {
        "chain_id": CHAIN,
        "gas_limit": 3_000_000,
        "max_fee_per_gas": 40_000_000_000,
        "nonce_key": EXPIRING_NONCE_KEY,
        "nonce": 0,
        "valid_before": EXPIRES - 5,
        "fee_token": TOKEN,
    }
    opts.update(kw)
    return build_tempo_tx(calls, **opts)


def open_raw(deposit: int = 1_000, **kw: Any) -> bytes:
    calls = open_calls(escrow=ESCROW, token=TOKEN, payee=PAYEE, deposit=deposit, salt=SALT)
    return sign_tempo_tx(tx_for(calls, **kw), PAYER_KEY)


def check(raw: bytes, **kw: Any) -> Any:
    opts: dict[str, Any] = {
        "escrow": ESCROW,
        "token": TOKEN,
        "payee": PAYEE,
        "chain_id": CHAIN,
        "max_valid_before": EXPIRES,
    }
    opts.update(kw)
    return check_open_tx(decode_tempo_tx(raw), **opts)


# --- round trips ---------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    deposit=st.integers(min_value=1, max_value=2**128 - 1),
    nonce_key=st.sampled_from([0, 7, EXPIRING_NONCE_KEY]),
    nonce=st.integers(min_value=0, max_value=2**64 - 1),
    valid_before=st.one_of(st.none(), st.integers(min_value=1, max_value=2**64 - 1)),
    sponsored=st.booleans(),
)
def test_ses_14_decode_build_round_trip(
    deposit: int, nonce_key: int, nonce: int, valid_before: int | None, sponsored: bool
) -> None:
    calls = open_calls(escrow=ESCROW, token=TOKEN, payee=PAYEE, deposit=deposit, salt=SALT)
    tx = tx_for(
        calls,
        nonce_key=nonce_key,
        nonce=nonce,
        valid_before=valid_before,
        awaiting_fee_payer=sponsored,
    )
    raw = sign_tempo_tx(tx, PAYER_KEY)
    decoded = decode_tempo_tx(raw)
    assert decoded.sender == PAYER
    assert (decoded.nonce_key, decoded.nonce, decoded.valid_before) == (
        nonce_key,
        nonce,
        valid_before,
    )
    assert decoded.chain_id == CHAIN and decoded.gas_limit == 3_000_000
    assert [c.to for c in decoded.calls] == [TOKEN, ESCROW]
    assert [c.data for c in decoded.calls] == [bytes(c.data) for c in calls]
    assert decoded.awaiting_fee_payer is sponsored
    assert decoded.fee_token == (None if sponsored else TOKEN)
    assert decoded.tx_hash == "0x" + keccak(raw).hex()
    assert decode_tempo_tx("0x" + raw.hex()) == decoded
    if not sponsored:  # pytempo's own encoding and hash are kept as they are
        signed = tx.sign(PAYER_KEY)
        assert raw == signed.encode() and decoded.tx_hash == "0x" + signed.hash().hex()


def test_ses_14_sender_hash_matches_pytempo_signing_hash() -> None:
    """The sender preimage: 0x76 || rlp(13 fields); fee token blanked + 0x00 when sponsored."""
    from mpp.session.tempo_tx import sender_signing_hash

    calls = open_calls(escrow=ESCROW, token=TOKEN, payee=PAYEE, deposit=5, salt=SALT)
    for sponsored in (False, True):
        tx = tx_for(calls, awaiting_fee_payer=sponsored)
        decoded = decode_tempo_tx(sign_tempo_tx(tx, PAYER_KEY))
        assert sender_signing_hash(decoded.fields) == tx.get_signing_hash()


def test_ses_03_sponsored_placeholder_and_cosignature() -> None:
    """The sender leaves 0x00 in the fee-payer slot (like mppx/viem); the sponsor signs 0x78."""
    raw = open_raw(awaiting_fee_payer=True)
    fields = rlp.decode(raw[1:])
    assert fields[11] == b"\x00" and fields[10] == b""
    decoded = decode_tempo_tx(raw)
    assert decoded.sponsored and fee_payer_of(decoded) is None
    cosigned = cosign_as_fee_payer(raw, SPONSOR_KEY, fee_token=TOKEN)
    again = decode_tempo_tx(cosigned)
    assert again.sender == PAYER  # the sender signature still verifies after co-signing
    assert again.fee_token == TOKEN and not again.awaiting_fee_payer
    assert fee_payer_of(again) == SPONSOR
    # Same as pytempo's own fee-payer signature over the same transaction.
    tx = tx_for(
        open_calls(escrow=ESCROW, token=TOKEN, payee=PAYEE, deposit=1_000, salt=SALT),
        awaiting_fee_payer=True,
    )
    ref = tx.sign(PAYER_KEY)
    ref = TempoTransaction.create(
        **{**_create_args(ref), "fee_token": TOKEN, "awaiting_fee_payer": True}
    )
    ref_hash = ref.sign(PAYER_KEY).get_signing_hash(for_fee_payer=True)
    from mpp.session.tempo_tx import fee_payer_signing_hash

    assert fee_payer_signing_hash(again.fields, PAYER) == ref_hash


def _create_args(tx: TempoTransaction) -> dict[str, Any]:
    return {
        "chain_id": tx.chain_id,
        "gas_limit": tx.gas_limit,
        "max_fee_per_gas": tx.max_fee_per_gas,
        "nonce_key": tx.nonce_key,
        "nonce": tx.nonce,
        "valid_before": tx.valid_before,
        "calls": tx.calls,
    }


def test_ses_03_cosign_refuses_self_paid_tx() -> None:
    with pytest.raises(TempoTxError, match="fee payer"):
        cosign_as_fee_payer(open_raw(), SPONSOR_KEY)


# --- check_open_tx -------------------------------------------------------------------------------


def test_ses_14_check_open_accepts_the_official_client_shape() -> None:
    """mppx: expiring nonce (2^256-1, 0), valid_before ~25 s, feeToken = currency."""
    got = check(open_raw(deposit=1_234))
    assert got.payer == PAYER and got.payee == PAYEE and got.token == TOKEN
    assert got.deposit == 1_234 and got.salt == SALT and got.authorized_signer == ZERO
    assert got.channel_id == channel_id(PAYER, PAYEE, TOKEN, SALT, ZERO, ESCROW, CHAIN)


def test_ses_14_check_open_mixed_case_challenge_values() -> None:
    got = check(
        open_raw(),
        escrow=ESCROW.upper().replace("0X", "0x"),
        payee=PAYEE.upper().replace("0X", "0x"),
    )
    assert got.payee == PAYEE


def _raw(calls: tuple[Call, ...], **kw: Any) -> bytes:
    return sign_tempo_tx(tx_for(calls, **kw), PAYER_KEY)


def _open(**kw: Any) -> Call:
    args: dict[str, Any] = {"payee": PAYEE, "token": TOKEN, "deposit": 1_000, "salt": SALT}
    args.update(kw)
    return Call.create(to=args.pop("to", ESCROW), data=encode_open(authorized_signer=ZERO, **args))


def _approve(to: str = TOKEN, spender: str = ESCROW, amount: int = 1_000) -> Call:
    return Call.create(to=to, data=encode_approve(spender, amount))


BAD_OPENS: dict[str, tuple[Callable[[], bytes], dict[str, Any], str]] = {
    "approve on another token": (lambda: _raw((_approve(to=OTHER_TOKEN), _open())), {}, "currency"),
    "open with another token": (lambda: _raw((_approve(), _open(token=OTHER_TOKEN))), {}, "token"),
    "spender not the escrow": (lambda: _raw((_approve(spender=PAYEE), _open())), {}, "spender"),
    "payee not the recipient": (lambda: _raw((_approve(), _open(payee=SPONSOR))), {}, "payee"),
    "approve below deposit": (lambda: _raw((_approve(amount=999), _open())), {}, "below"),
    "open on another escrow": (lambda: _raw((_approve(), _open(to=PAYEE))), {}, "escrow"),
    "zero deposit": (lambda: _raw((_approve(amount=0), _open(deposit=0))), {}, "positive"),
    "wrong chain id": (lambda: open_raw(chain_id=4217), {}, "chain id"),
    "extra call": (
        lambda: _raw((_approve(), _open(), _approve(spender=PAYEE, amount=2**255))),
        {},
        "exactly",
    ),
    "open alone": (lambda: _raw((_open(),)), {}, "exactly"),
    "calls swapped": (lambda: _raw((_open(), _approve())), {}, "escrow|selector|currency"),
    "valid_before beyond expiry": (lambda: open_raw(valid_before=EXPIRES + 1), {}, "expiry"),
    "no valid_before": (lambda: open_raw(valid_before=None, nonce_key=0), {}, "expiry"),
    "value attached": (
        lambda: _raw((_approve(), Call.create(to=ESCROW, value=1, data=_open().data))),
        {},
        "value",
    ),
    "trailing calldata": (
        lambda: _raw((_approve(), Call.create(to=ESCROW, data=_open().data + b"\x00"))),
        {},
        "length",
    ),
    "escrow mismatch in challenge": (lambda: open_raw(), {"escrow": "0x" + "ee" * 20}, "escrow"),
}


@pytest.mark.parametrize("case", sorted(BAD_OPENS))
def test_ses_14_check_open_rejects_wrong_fields(case: str) -> None:
    make, overrides, message = BAD_OPENS[case]
    with pytest.raises(VerificationFailed, match=message):
        check(make(), **overrides)


# --- check_topup_tx (SES-17/18) ------------------------------------------------------------------

CID = "0x" + "c1" * 32


def topup_raw(amount: int = 500, cid: str = CID, approve: int | None = None) -> bytes:
    calls = topup_calls(escrow=ESCROW, token=TOKEN, channel_id=cid, additional_deposit=amount)
    if approve is not None:
        calls = (_approve(amount=approve), calls[1])
    return sign_tempo_tx(tx_for(calls), PAYER_KEY)


def test_ses_18_check_topup_accepts_and_returns_payer() -> None:
    got = check_topup_tx(
        decode_tempo_tx(topup_raw()),
        escrow=ESCROW, token=TOKEN, channel_id=CID.upper().replace("0X", "0x"),
        additional_deposit=500, chain_id=CHAIN, max_valid_before=EXPIRES,
    )  # fmt: skip
    assert (got.payer, got.channel_id, got.additional_deposit) == (PAYER, CID, 500)


@pytest.mark.parametrize(
    ("raw", "amount", "message"),
    [
        (lambda: topup_raw(500), 501, "additionalDeposit"),
        (lambda: topup_raw(500, cid="0x" + "c2" * 32), 500, "another channel"),
        (lambda: topup_raw(500, approve=499), 500, "below"),
        (lambda: open_raw(), 500, "selector"),
    ],
)
def test_ses_17_check_topup_rejects(raw: Callable[[], bytes], amount: int, message: str) -> None:
    with pytest.raises(VerificationFailed, match=message):
        check_topup_tx(
            decode_tempo_tx(raw()),
            escrow=ESCROW, token=TOKEN, channel_id=CID, additional_deposit=amount, chain_id=CHAIN,
        )  # fmt: skip


def test_ses_18_topup_calldata_selector() -> None:
    assert encode_topup(CID, 1)[:4].hex() == "b67644b9"
    assert encode_open(PAYEE, TOKEN, 1, SALT, ZERO)[:4].hex() == "c79ea485"


# --- decoder robustness --------------------------------------------------------------------------


def _with_sig(raw: bytes, mutate: Callable[[bytes], bytes]) -> bytes:
    fields = rlp.decode(raw[1:])
    fields[13] = mutate(fields[13])
    return bytes((0x76,)) + bytes(rlp.encode(fields))


def _high_s(sig: bytes) -> bytes:
    s = SECP256K1_N - int.from_bytes(sig[32:64], "big")
    return sig[:32] + s.to_bytes(32, "big") + bytes((sig[64] ^ 1,))


@pytest.mark.parametrize(
    "make",
    [
        lambda: b"",
        lambda: b"\x02" + open_raw()[1:],  # a type-2 tx
        lambda: open_raw()[:-3],  # truncated
        lambda: open_raw() + b"\x00",  # trailing bytes
        lambda: b"\x76" + rlp.encode([b"\x01"] * 14),
        lambda: _with_sig(open_raw(), lambda s: s[:64]),
        lambda: _with_sig(open_raw(), _high_s),
        lambda: _with_sig(open_raw(), lambda s: s[:64] + b"\x05"),
        lambda: b"\x76" + b"\xc0" * 70_000,
    ],
)
def test_ses_42_decoder_refuses_malformed(make: Callable[[], bytes]) -> None:
    with pytest.raises(TempoTxError):
        decode_tempo_tx(make())


def test_ses_14_tampered_call_changes_the_recovered_sender() -> None:
    """Changing a signed field cannot keep the payer: recovery yields another address."""
    raw = open_raw()
    fields = rlp.decode(raw[1:])
    fields[4][1][2] = encode_open(SPONSOR, TOKEN, 1_000, SALT, ZERO)
    tampered = bytes((0x76,)) + rlp.encode(fields)
    assert decode_tempo_tx(tampered).sender != PAYER


def test_ses_03_sponsored_sender_does_not_commit_to_fee_token() -> None:
    raw = open_raw(awaiting_fee_payer=True)
    one = decode_tempo_tx(cosign_as_fee_payer(raw, SPONSOR_KEY, fee_token=TOKEN))
    two = decode_tempo_tx(cosign_as_fee_payer(raw, SPONSOR_KEY, fee_token=OTHER_TOKEN))
    assert one.sender == two.sender == PAYER
    assert one.fee_token != two.fee_token
