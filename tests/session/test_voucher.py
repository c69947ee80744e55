"""Vouchers against eth-account as the oracle (SES-06, 08, 09, 10, 11, 24; AMB-07)."""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_hash.auto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from mpp.core.errors import InvalidSignature, MalformedCredential, SignerMismatch
from mpp.session.voucher import (
    MAX_AMOUNT,
    SECP256K1_N,
    VOUCHER_TYPEHASH,
    InvalidAmount,
    channel_id,
    domain_separator,
    normalize_signature,
    recover_voucher_signer,
    sign_voucher,
    verify_voucher,
    voucher_digest,
)

KEY = "0x" + "42" * 32
ADDRESS = Account.from_key(KEY).address.lower()
ESCROW = "0x" + "e5" * 20
CID = "0x" + "c1" * 32
CHAIN = 31337

addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
ids = st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex())
amounts = st.integers(min_value=0, max_value=MAX_AMOUNT)
chains = st.integers(min_value=1, max_value=2**64)
names = st.sampled_from(["Tempo Stream Channel", "EVM Payment Channel"])
keys = st.integers(min_value=1, max_value=SECP256K1_N - 1).map(lambda k: k.to_bytes(32, "big"))


def typed(cid: str, amount: int, chain_id: int, escrow: str, name: str) -> dict[str, Any]:
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Voucher": [
                {"name": "channelId", "type": "bytes32"},
                {"name": "cumulativeAmount", "type": "uint128"},
            ],
        },
        "primaryType": "Voucher",
        "domain": {"name": name, "version": "1", "chainId": chain_id, "verifyingContract": escrow},
        "message": {"channelId": cid, "cumulativeAmount": amount},
    }


def oracle_digest(cid: str, amount: int, chain_id: int, escrow: str, name: str) -> bytes:
    msg = encode_typed_data(full_message=typed(cid, amount, chain_id, escrow, name))
    return keccak(b"\x19" + msg.version + msg.header + msg.body)


def malleate(signature: str) -> str:
    raw = bytes.fromhex(signature[2:])
    s = SECP256K1_N - int.from_bytes(raw[32:64], "big")
    return "0x" + (raw[:32] + s.to_bytes(32, "big") + bytes((55 - raw[64],))).hex()


def compact(signature: str) -> str:
    raw = bytes.fromhex(signature[2:])
    vs = int.from_bytes(raw[32:64], "big") | ((raw[64] - 27) << 255)
    return "0x" + (raw[:32] + vs.to_bytes(32, "big")).hex()


def test_ses_09_voucher_typehash() -> None:
    assert "0x" + VOUCHER_TYPEHASH.hex() == (
        "0xe97c93f01d3ef8eaba1586553df13308f236815bf4ea49c7b696895d8f5ea68a"
    )


@settings(max_examples=150, deadline=None)
@given(cid=ids, amount=amounts, chain_id=chains, escrow=addresses, name=names)
def test_ses_08_09_digest_matches_eth_account(
    cid: str, amount: int, chain_id: int, escrow: str, name: str
) -> None:
    ours = voucher_digest(cid, amount, chain_id=chain_id, escrow=escrow, name=name)
    assert ours == oracle_digest(cid, amount, chain_id, escrow, name)


@settings(max_examples=60, deadline=None)
@given(key=keys, cid=ids, amount=amounts, chain_id=chains, escrow=addresses)
def test_ses_10_signature_matches_eth_account(
    key: bytes, cid: str, amount: int, chain_id: int, escrow: str
) -> None:
    """Deterministic RFC 6979: our signature is byte-identical to eth-account's and recovers."""
    ours = sign_voucher(key, cid, amount, chain_id=chain_id, escrow=escrow)
    message = encode_typed_data(
        full_message=typed(cid, amount, chain_id, escrow, "Tempo Stream Channel")
    )
    oracle = Account.sign_message(message, key)
    assert ours == "0x" + bytes(oracle.signature).hex()
    assert ours[-2:] in ("1b", "1c")
    signer = Account.from_key(key).address.lower()
    assert Account.recover_message(message, signature=ours).lower() == signer
    assert recover_voucher_signer(cid, amount, ours, chain_id=chain_id, escrow=escrow) == signer


def test_ses_10_key_forms_are_equivalent() -> None:
    account = Account.from_key(KEY)
    forms = [KEY, KEY.upper().replace("0X", "0x"), bytes.fromhex(KEY[2:]), account]
    sigs = {sign_voucher(k, CID, 7, chain_id=CHAIN, escrow=ESCROW) for k in forms}
    assert len(sigs) == 1


def test_ses_10_compact_64_byte_form_recovers_and_normalizes() -> None:
    """AMB-07: 64-byte EIP-2098 accepted, normalized to the 65-byte form."""
    for amount in range(1, 9):  # both parities show up
        sig = sign_voucher(KEY, CID, amount, chain_id=CHAIN, escrow=ESCROW)
        short = compact(sig)
        assert len(bytes.fromhex(short[2:])) == 64
        assert recover_voucher_signer(CID, amount, short, chain_id=CHAIN, escrow=ESCROW) == ADDRESS
        assert normalize_signature(short) == sig
        assert normalize_signature(sig.upper().replace("0X", "0x")) == sig


def test_ses_11_high_s_twin_refused() -> None:
    sig = sign_voucher(KEY, CID, 100, chain_id=CHAIN, escrow=ESCROW)
    twin = malleate(sig)
    # eth-account accepts the twin (docs/development.md): we must not.
    message = encode_typed_data(full_message=typed(CID, 100, CHAIN, ESCROW, "Tempo Stream Channel"))
    assert Account.recover_message(message, signature=twin).lower() == ADDRESS
    with pytest.raises(InvalidSignature, match="high-s"):
        recover_voucher_signer(CID, 100, twin, chain_id=CHAIN, escrow=ESCROW)
    with pytest.raises(InvalidSignature):
        normalize_signature(twin)


@pytest.mark.parametrize("v", [0, 1, 26, 29, 255])
def test_ses_10_v_outside_27_28_refused(v: int) -> None:
    sig = sign_voucher(KEY, CID, 100, chain_id=CHAIN, escrow=ESCROW)
    bad = sig[:-2] + format(v, "02x")
    with pytest.raises(InvalidSignature, match="v must be 27 or 28"):
        recover_voucher_signer(CID, 100, bad, chain_id=CHAIN, escrow=ESCROW)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "0x",
        "0xzz" + "00" * 64,
        "00" * 65,  # no 0x prefix
        "0x" + "11" * 63,
        "0x" + "11" * 66,
        "0x" + "00" * 32 + "11" * 32 + "1b",  # r = 0
        "0x" + "11" * 32 + "00" * 32 + "1b",  # s = 0
        "0x" + "ff" * 32 + "11" * 32 + "1b",  # r >= n
    ],
)
def test_ses_42_malformed_signature_refused(bad: str) -> None:
    with pytest.raises(InvalidSignature):
        recover_voucher_signer(CID, 1, bad, chain_id=CHAIN, escrow=ESCROW)


@pytest.mark.parametrize("amount", [-1, MAX_AMOUNT + 1, 2**256])
def test_ses_24_amount_outside_uint128_refused(amount: int) -> None:
    for call in (
        lambda: voucher_digest(CID, amount, chain_id=CHAIN, escrow=ESCROW),
        lambda: sign_voucher(KEY, CID, amount, chain_id=CHAIN, escrow=ESCROW),
    ):
        with pytest.raises(InvalidAmount) as info:
            call()
        assert isinstance(info.value, ValueError)
        assert isinstance(info.value, MalformedCredential)


def test_ses_24_max_amount_and_non_int_amounts() -> None:
    sig = sign_voucher(KEY, CID, MAX_AMOUNT, chain_id=CHAIN, escrow=ESCROW)
    assert recover_voucher_signer(CID, MAX_AMOUNT, sig, chain_id=CHAIN, escrow=ESCROW) == ADDRESS
    for bad in (True, 1.0, "1"):
        with pytest.raises(InvalidAmount):
            voucher_digest(CID, bad, chain_id=CHAIN, escrow=ESCROW)  # type: ignore[arg-type]


def test_ses_05_malformed_ids_refused() -> None:
    for bad in ("0x1234", "c1" * 32, "0x" + "zz" * 32):
        with pytest.raises(ValueError):
            voucher_digest(bad, 1, chain_id=CHAIN, escrow=ESCROW)
    with pytest.raises(ValueError):
        voucher_digest(CID, 1, chain_id=CHAIN, escrow="0x1234")


def test_ses_05_mixed_case_inputs_give_the_same_digest() -> None:
    upper_id = "0x" + CID[2:].upper()
    upper_escrow = "0x" + ESCROW[2:].upper()
    assert voucher_digest(upper_id, 5, chain_id=CHAIN, escrow=upper_escrow) == voucher_digest(
        CID, 5, chain_id=CHAIN, escrow=ESCROW
    )


def test_ses_08_wrong_domain_name_recovers_someone_else() -> None:
    sig = sign_voucher(KEY, CID, 5, chain_id=CHAIN, escrow=ESCROW, name="EVM Payment Channel")
    assert recover_voucher_signer(CID, 5, sig, chain_id=CHAIN, escrow=ESCROW) != ADDRESS
    assert domain_separator(CHAIN, ESCROW) != domain_separator(CHAIN, ESCROW, "EVM Payment Channel")


def test_ses_12_verify_voucher_signer_mismatch() -> None:
    sig = sign_voucher(KEY, CID, 5, chain_id=CHAIN, escrow=ESCROW)
    verify_voucher(
        CID,
        5,
        sig,
        expected_signer=ADDRESS.upper().replace("0X", "0x"),
        chain_id=CHAIN,
        escrow=ESCROW,
    )
    with pytest.raises(SignerMismatch):
        verify_voucher(CID, 5, sig, expected_signer="0x" + "11" * 20, chain_id=CHAIN, escrow=ESCROW)
    with pytest.raises(SignerMismatch):  # another amount recovers another address
        verify_voucher(CID, 6, sig, expected_signer=ADDRESS, chain_id=CHAIN, escrow=ESCROW)


@settings(max_examples=60, deadline=None)
@given(
    payer=addresses, payee=addresses, token=addresses, salt=ids, signer=addresses,
    escrow=addresses, chain_id=chains,
)  # fmt: skip
def test_ses_06_channel_id_is_keccak_of_abi_encode(
    payer: str, payee: str, token: str, salt: str, signer: str, escrow: str, chain_id: int
) -> None:
    encoded = abi_encode(
        ["address", "address", "address", "bytes32", "address", "address", "uint256"],
        [payer, payee, token, bytes.fromhex(salt[2:]), signer, escrow, chain_id],
    )
    expected = "0x" + keccak(encoded).hex()
    assert channel_id(payer, payee, token, salt, signer, escrow, chain_id) == expected


def test_ses_06_authorized_signer_is_the_raw_argument() -> None:
    payer = ADDRESS
    zero = "0x" + "00" * 20
    salt = "0x" + "01" * 32
    with_zero = channel_id(payer, ESCROW, ESCROW, salt, zero, ESCROW, CHAIN)
    with_payer = channel_id(payer, ESCROW, ESCROW, salt, payer, ESCROW, CHAIN)
    assert with_zero != with_payer
    assert with_zero == with_zero.lower() and len(with_zero) == 66
