"""Calldata of the TempoStreamChannel v1 escrow and the TIP-20 calls around it (ESC-03).

Pure functions on bytes, shared by the session layer (which builds and checks open/topUp batches
and submits settle/close) and mpp.chain (which re-exports them with the view-function decoders).
Besides the v1 ABI, our escrow has the exact-capture pair (ESC-16 `settleCapture`, ESC-17
`closeCapture`): a voucher for `cumulative_amount`, of which the payee takes `capture_amount`.
"""

from __future__ import annotations

from typing import Any, Final

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_hash.auto import keccak

from mpp.core.errors import VerificationFailed


def _selector(signature: str) -> bytes:
    return keccak(signature.encode())[:4]


APPROVE_SELECTOR: Final = keccak(b"approve(address,uint256)")[:4]
OPEN_SELECTOR: Final = keccak(b"open(address,address,uint128,bytes32,address)")[:4]
TOPUP_SELECTOR: Final = keccak(b"topUp(bytes32,uint256)")[:4]
TRANSFER_SELECTOR: Final = keccak(b"transfer(address,uint256)")[:4]
TRANSFER_WITH_MEMO_SELECTOR: Final = keccak(b"transferWithMemo(address,uint256,bytes32)")[:4]


class TempoTxError(VerificationFailed):
    """A 0x76 transaction that cannot be decoded or that does not match the challenge."""


# --- open / topUp / approve / transfer: the calls of a 0x76 open or topUp batch ---------


def encode_approve(spender: str, amount: int) -> bytes:
    return APPROVE_SELECTOR + abi_encode(["address", "uint256"], [spender, amount])


def encode_transfer(to: str, amount: int) -> bytes:
    return TRANSFER_SELECTOR + abi_encode(["address", "uint256"], [to, amount])


def encode_transfer_with_memo(to: str, amount: int, memo: str | bytes) -> bytes:
    return TRANSFER_WITH_MEMO_SELECTOR + abi_encode(
        ["address", "uint256", "bytes32"], [to, amount, _b32(memo)]
    )


def decode_transfer(data: bytes) -> tuple[str, int, str | None]:
    """(to, amount, memo or None) of a TIP-20 `transfer` or `transferWithMemo` call."""
    if data[:4] == TRANSFER_WITH_MEMO_SELECTOR:
        types = ["address", "uint256", "bytes32"]
        to, amount, memo = _decode_args(data, TRANSFER_WITH_MEMO_SELECTOR, types, "transfer")
        return str(to).lower(), int(amount), "0x" + bytes(memo).hex()
    to, amount = _decode_args(data, TRANSFER_SELECTOR, ["address", "uint256"], "transfer")
    return str(to).lower(), int(amount), None


def encode_open(
    payee: str, token: str, deposit: int, salt: str | bytes, authorized_signer: str
) -> bytes:
    salt_b = bytes.fromhex(salt[2:]) if isinstance(salt, str) else salt
    return OPEN_SELECTOR + abi_encode(
        ["address", "address", "uint128", "bytes32", "address"],
        [payee, token, deposit, salt_b, authorized_signer],
    )


def encode_topup(channel_id: str | bytes, additional_deposit: int) -> bytes:
    cid = bytes.fromhex(channel_id[2:]) if isinstance(channel_id, str) else channel_id
    return TOPUP_SELECTOR + abi_encode(["bytes32", "uint256"], [cid, additional_deposit])


def _decode_args(data: bytes, selector: bytes, types: list[str], what: str) -> tuple[Any, ...]:
    if data[:4] != selector:
        raise TempoTxError(f"{what}: unexpected function selector 0x{data[:4].hex()}")
    if len(data) != 4 + 32 * len(types):
        raise TempoTxError(f"{what}: calldata has the wrong length")
    try:
        return tuple(abi_decode(types, data[4:], strict=True))
    except Exception:
        raise TempoTxError(f"{what}: calldata does not decode") from None


def decode_approve(data: bytes) -> tuple[str, int]:
    spender, amount = _decode_args(data, APPROVE_SELECTOR, ["address", "uint256"], "approve")
    return str(spender).lower(), int(amount)


def decode_open(data: bytes) -> tuple[str, str, int, str, str]:
    """(payee, token, deposit, salt, authorized_signer), lowercase hex."""
    payee, token, deposit, salt, signer = _decode_args(
        data, OPEN_SELECTOR, ["address", "address", "uint128", "bytes32", "address"], "open"
    )
    return (
        str(payee).lower(),
        str(token).lower(),
        int(deposit),
        "0x" + salt.hex(),
        str(signer).lower(),
    )


def decode_topup(data: bytes) -> tuple[str, int]:
    cid, amount = _decode_args(data, TOPUP_SELECTOR, ["bytes32", "uint256"], "topUp")
    return "0x" + cid.hex(), int(amount)


# --- settle / close / views ---------------------------------------------------------------------


def _b32(value: str | bytes) -> bytes:
    raw = bytes.fromhex(value[2:]) if isinstance(value, str) else bytes(value)
    if len(raw) != 32:
        raise ValueError("expected 32 bytes")
    return raw


def _sig_bytes(signature: str | bytes | None) -> bytes:
    # close(id, cum, "") is valid when cum == settled: the escrow checks no signature (ESC-10);
    # so is closeCapture(id, cum, capture, "") when capture == settled (ESC-17).
    if not signature:
        return b""
    return bytes.fromhex(signature[2:]) if isinstance(signature, str) else bytes(signature)


# --- functions (ESC-03) -------------------------------------------------------------------------

SETTLE: Final = _selector("settle(bytes32,uint128,bytes)")
CLOSE: Final = _selector("close(bytes32,uint128,bytes)")
SETTLE_CAPTURE: Final = _selector("settleCapture(bytes32,uint128,uint128,bytes)")  # ESC-16
CLOSE_CAPTURE: Final = _selector("closeCapture(bytes32,uint128,uint128,bytes)")  # ESC-17
REQUEST_CLOSE: Final = _selector("requestClose(bytes32)")
WITHDRAW: Final = _selector("withdraw(bytes32)")
GET_CHANNEL: Final = _selector("getChannel(bytes32)")
COMPUTE_CHANNEL_ID: Final = _selector("computeChannelId(address,address,address,bytes32,address)")
GET_VOUCHER_DIGEST: Final = _selector("getVoucherDigest(bytes32,uint128)")
CLOSE_GRACE_PERIOD: Final = _selector("CLOSE_GRACE_PERIOD()")
BALANCE_OF: Final = _selector("balanceOf(address)")


def encode_settle(channel_id: str | bytes, cumulative_amount: int, signature: str | bytes) -> bytes:
    return SETTLE + abi_encode(
        ["bytes32", "uint128", "bytes"],
        [_b32(channel_id), cumulative_amount, _sig_bytes(signature)],
    )


def encode_close(
    channel_id: str | bytes, cumulative_amount: int, signature: str | bytes | None
) -> bytes:
    return CLOSE + abi_encode(
        ["bytes32", "uint128", "bytes"],
        [_b32(channel_id), cumulative_amount, _sig_bytes(signature)],
    )


def encode_settle_capture(
    channel_id: str | bytes, cumulative_amount: int, capture_amount: int, signature: str | bytes
) -> bytes:
    """ESC-16: take `capture_amount` (settled < capture <= cumulative) of a voucher for
    `cumulative_amount`; `signature` covers `cumulative_amount`."""
    return SETTLE_CAPTURE + abi_encode(
        ["bytes32", "uint128", "uint128", "bytes"],
        [_b32(channel_id), cumulative_amount, capture_amount, _sig_bytes(signature)],
    )


def encode_close_capture(
    channel_id: str | bytes,
    cumulative_amount: int,
    capture_amount: int,
    signature: str | bytes | None,
) -> bytes:
    """ESC-17: close capturing exactly `capture_amount` (>= settled), the rest of the deposit
    refunded. When `capture_amount` equals what is settled the escrow looks at neither the
    voucher nor the signature: pass None (encoded as empty bytes)."""
    return CLOSE_CAPTURE + abi_encode(
        ["bytes32", "uint128", "uint128", "bytes"],
        [_b32(channel_id), cumulative_amount, capture_amount, _sig_bytes(signature)],
    )


def encode_request_close(channel_id: str | bytes) -> bytes:
    return REQUEST_CLOSE + _b32(channel_id)


def encode_withdraw(channel_id: str | bytes) -> bytes:
    return WITHDRAW + _b32(channel_id)


def encode_get_channel(channel_id: str | bytes) -> bytes:
    return GET_CHANNEL + _b32(channel_id)


def encode_compute_channel_id(
    payer: str, payee: str, token: str, salt: str | bytes, authorized_signer: str
) -> bytes:
    return COMPUTE_CHANNEL_ID + abi_encode(
        ["address", "address", "address", "bytes32", "address"],
        [payer, payee, token, _b32(salt), authorized_signer],
    )


def encode_get_voucher_digest(channel_id: str | bytes, cumulative_amount: int) -> bytes:
    return GET_VOUCHER_DIGEST + abi_encode(
        ["bytes32", "uint128"], [_b32(channel_id), cumulative_amount]
    )


def encode_balance_of(owner: str) -> bytes:
    return BALANCE_OF + abi_encode(["address"], [owner])
