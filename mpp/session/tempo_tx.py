"""Tempo transactions (type 0x76) for session opens and top-ups: build, decode, check, co-sign.

Rows: SES-13/14 (open payload and its transaction check), SES-17/18 (topUp), SES-03 (fee payer
co-signature in the 0x78 domain).

Wire layout: ``0x76 || rlp([chain_id, max_priority_fee, max_fee, gas, calls, access_list,
nonce_key, nonce, valid_before, valid_after, fee_token, fee_payer, authorization_list,
sender_signature])`` (an optional key authorization before the signature is refused here).

The fee-payer slot is empty (self-paid), ``0x00`` (awaiting a sponsor: what the official
TypeScript client sends) or the sponsor's ``[y_parity, r, s]``. The sender never commits to
``fee_token`` when a fee payer is involved. pytempo encodes an unsponsored "awaiting" tx with an
empty slot (``0x80``), which nobody can tell from a self-paid one, so `sign_tempo_tx` writes the
``0x00`` placeholder itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import rlp
from coincurve import PrivateKey, PublicKey
from eth_hash.auto import keccak
from pytempo import Call, TempoTransaction

from mpp.session.escrow_abi import (  # noqa: F401  (re-exported: the calldata of open/topUp batches)
    APPROVE_SELECTOR,
    OPEN_SELECTOR,
    TOPUP_SELECTOR,
    TRANSFER_SELECTOR,
    TempoTxError,
    decode_approve,
    decode_open,
    decode_topup,
    encode_approve,
    encode_open,
    encode_topup,
    encode_transfer,
)
from mpp.session.voucher import SECP256K1_HALF_N, SECP256K1_N, private_key_bytes
from mpp.session.voucher import channel_id as derive_channel_id

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

TX_TYPE: Final = 0x76
FEE_PAYER_MAGIC: Final = 0x78
EXPIRING_NONCE_KEY: Final = 2**256 - 1  # TIP-1009 expiring nonces (nonce 0, short valid_before)
ZERO_ADDRESS: Final = "0x" + "00" * 20

TIP20_TRANSFER_GAS: Final = 300_000  # a TIP-20 transfer to a fresh account on T4 is ~280 k

_MAX_RAW: Final = 64 * 1024  # size cap before decoding (SES-42)


def transfer_call(token: str, to: str, amount: int) -> Call:
    """token.transfer(to, amount) as a 0x76 call."""
    return Call.create(to=token, data=encode_transfer(to, amount))


# --- building -----------------------------------------------------------------------------------


def open_calls(
    *,
    escrow: str,
    token: str,
    payee: str,
    deposit: int,
    salt: str | bytes,
    authorized_signer: str = ZERO_ADDRESS,
    approve_amount: int | None = None,
) -> tuple[Call, Call]:
    """[token.approve(escrow, deposit), escrow.open(payee, token, deposit, salt, signer)]."""
    approve = encode_approve(escrow, deposit if approve_amount is None else approve_amount)
    return (
        Call.create(to=token, data=approve),
        Call.create(to=escrow, data=encode_open(payee, token, deposit, salt, authorized_signer)),
    )


def topup_calls(
    *, escrow: str, token: str, channel_id: str | bytes, additional_deposit: int
) -> tuple[Call, Call]:
    """[token.approve(escrow, amount), escrow.topUp(channelId, amount)]."""
    return (
        Call.create(to=token, data=encode_approve(escrow, additional_deposit)),
        Call.create(to=escrow, data=encode_topup(channel_id, additional_deposit)),
    )


def build_tempo_tx(
    calls: tuple[Call, ...],
    *,
    chain_id: int,
    gas_limit: int,
    max_fee_per_gas: int,
    max_priority_fee_per_gas: int = 0,
    nonce_key: int = 0,
    nonce: int = 0,
    valid_before: int | None = None,
    valid_after: int | None = None,
    fee_token: str | None = None,
    awaiting_fee_payer: bool = False,
) -> TempoTransaction:
    """An unsigned 0x76 transaction. Self-paid: give `fee_token`. Sponsored: `awaiting_fee_payer`.

    The official client uses `nonce_key=EXPIRING_NONCE_KEY, nonce=0, valid_before=now+25`.
    """
    return TempoTransaction.create(
        chain_id=chain_id,
        gas_limit=gas_limit,
        max_fee_per_gas=max_fee_per_gas,
        max_priority_fee_per_gas=max_priority_fee_per_gas,
        nonce_key=nonce_key,
        nonce=nonce,
        valid_before=valid_before,
        valid_after=valid_after,
        fee_token=None if awaiting_fee_payer else fee_token,
        awaiting_fee_payer=awaiting_fee_payer,
        calls=calls,
    )


def sign_tempo_tx(tx: TempoTransaction, key: str | bytes | LocalAccount) -> bytes:
    """Sign as sender; returns the raw bytes to send (with the 0x00 placeholder if sponsored)."""
    secret = "0x" + private_key_bytes(key).hex()
    signed = tx.sign(secret)
    raw = bytes(signed.encode())
    if not tx.awaiting_fee_payer or tx.fee_payer_signature is not None:
        return raw
    fields = rlp.decode(raw[1:])
    fields[10] = b""  # the sender did not commit to a fee token
    fields[11] = b"\x00"  # placeholder expected by sponsors (viem/ox, docs/development.md)
    return bytes((TX_TYPE,)) + bytes(rlp.encode(fields))


# --- decoding -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TempoCall:
    to: str  # lowercase hex, "" for contract creation
    value: int
    data: bytes


@dataclass(frozen=True)
class DecodedTempoTx:
    """A decoded, sender-recovered 0x76 transaction. Addresses lowercase."""

    raw: bytes
    chain_id: int
    max_priority_fee_per_gas: int
    max_fee_per_gas: int
    gas_limit: int
    calls: tuple[TempoCall, ...]
    nonce_key: int
    nonce: int
    valid_before: int | None
    valid_after: int | None
    fee_token: str | None
    awaiting_fee_payer: bool  # 0x00 placeholder: a sponsor must co-sign before broadcast
    fee_payer_signature: tuple[int, int, int] | None  # (y_parity, r, s)
    sender: str
    fields: tuple[Any, ...]  # the raw RLP items, kept for re-encoding

    @property
    def sponsored(self) -> bool:
        return self.awaiting_fee_payer or self.fee_payer_signature is not None

    @property
    def tx_hash(self) -> str:
        return "0x" + keccak(self.raw).hex()


def _uint(item: Any, what: str) -> int:
    if not isinstance(item, bytes):
        raise TempoTxError(f"{what} must be an RLP string")
    if item[:1] == b"\x00":
        raise TempoTxError(f"{what} has leading zeros")
    if len(item) > 32:
        raise TempoTxError(f"{what} is too large")
    return int.from_bytes(item, "big")


def _opt_uint(item: Any, what: str) -> int | None:
    return None if item == b"" else _uint(item, what)


def _addr_item(item: Any, what: str, *, allow_empty: bool) -> str | None:
    if not isinstance(item, bytes) or len(item) not in ((0, 20) if allow_empty else (20,)):
        raise TempoTxError(f"{what} must be a 20-byte address")
    return "0x" + item.hex() if item else None


def _recover(digest: bytes, r: int, s: int, y_parity: int, what: str) -> str:
    if not (0 < r < SECP256K1_N and 0 < s <= SECP256K1_HALF_N):
        raise TempoTxError(f"{what} signature out of range or high-s")
    try:
        pub = PublicKey.from_signature_and_message(
            r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes((y_parity,)), digest, hasher=None
        )
    except Exception:
        raise TempoTxError(f"{what} signature does not recover") from None
    return "0x" + keccak(pub.format(compressed=False)[1:])[12:].hex()


def sender_signing_hash(fields: list[Any] | tuple[Any, ...]) -> bytes:
    """keccak(0x76 || rlp(first 13 fields)), fee token blanked and 0x00 marker when sponsored."""
    head = list(fields[:13])
    if head[11] != b"":
        head[10] = b""
        head[11] = b"\x00"
    return keccak(bytes((TX_TYPE,)) + rlp.encode(head))


def fee_payer_signing_hash(fields: list[Any] | tuple[Any, ...], sender: str) -> bytes:
    """keccak(0x78 || rlp(fields with the fee-payer slot replaced by the sender address))."""
    head = list(fields[:13])
    head[11] = bytes.fromhex(sender[2:])
    return keccak(bytes((FEE_PAYER_MAGIC,)) + rlp.encode(head))


def decode_tempo_tx(raw: bytes | str) -> DecodedTempoTx:
    """Decode raw 0x76 bytes (or hex) and recover the sender. Raises TempoTxError."""
    if isinstance(raw, str):
        try:
            raw = bytes.fromhex(raw[2:] if raw[:2] in ("0x", "0X") else raw)
        except ValueError:
            raise TempoTxError("transaction is not hex") from None
    if len(raw) > _MAX_RAW:
        raise TempoTxError("transaction too large")
    if raw[:1] != bytes((TX_TYPE,)):
        raise TempoTxError("not a Tempo (0x76) transaction")
    try:
        fields = rlp.decode(raw[1:], strict=True)
    except Exception:
        raise TempoTxError("transaction RLP does not decode") from None
    if not isinstance(fields, list) or len(fields) != 14:
        raise TempoTxError("unsupported Tempo transaction shape (key authorization or bad length)")
    if not isinstance(fields[4], list) or not fields[4]:
        raise TempoTxError("transaction has no calls")
    if not isinstance(fields[5], list) or not isinstance(fields[12], list):
        raise TempoTxError("malformed access or authorization list")
    calls = []
    for item in fields[4]:
        if not isinstance(item, list) or len(item) != 3 or not isinstance(item[2], bytes):
            raise TempoTxError("malformed call")
        to = _addr_item(item[0], "call target", allow_empty=True) or ""
        calls.append(TempoCall(to=to, value=_uint(item[1], "call value"), data=item[2]))
    fee_slot = fields[11]
    fee_payer_signature: tuple[int, int, int] | None = None
    if isinstance(fee_slot, list):
        if len(fee_slot) != 3:
            raise TempoTxError("malformed fee payer signature")
        y, r, s = (_uint(x, "fee payer signature") for x in fee_slot)
        if y not in (0, 1):
            raise TempoTxError("fee payer signature parity must be 0 or 1")
        fee_payer_signature = (y, r, s)
    elif fee_slot not in (b"", b"\x00"):
        raise TempoTxError("malformed fee payer slot")
    sig = fields[13]
    if not isinstance(sig, bytes) or len(sig) != 65:
        raise TempoTxError("only 65-byte secp256k1 sender signatures are accepted")
    v = sig[64]
    if v not in (0, 1, 27, 28):
        raise TempoTxError("sender signature v must be 0, 1, 27 or 28")
    sender = _recover(
        sender_signing_hash(fields),
        int.from_bytes(sig[:32], "big"),
        int.from_bytes(sig[32:64], "big"),
        v - 27 if v >= 27 else v,
        "sender",
    )
    return DecodedTempoTx(
        raw=raw,
        chain_id=_uint(fields[0], "chain id"),
        max_priority_fee_per_gas=_uint(fields[1], "max priority fee"),
        max_fee_per_gas=_uint(fields[2], "max fee"),
        gas_limit=_uint(fields[3], "gas limit"),
        calls=tuple(calls),
        nonce_key=_uint(fields[6], "nonce key"),
        nonce=_uint(fields[7], "nonce"),
        valid_before=_opt_uint(fields[8], "valid_before"),
        valid_after=_opt_uint(fields[9], "valid_after"),
        fee_token=_addr_item(fields[10], "fee token", allow_empty=True),
        awaiting_fee_payer=fee_slot == b"\x00",
        fee_payer_signature=fee_payer_signature,
        sender=sender,
        fields=tuple(fields),
    )


def fee_payer_of(decoded: DecodedTempoTx) -> str | None:
    """The sponsor's address recovered from its 0x78 co-signature, or None."""
    if decoded.fee_payer_signature is None:
        return None
    y, r, s = decoded.fee_payer_signature
    return _recover(fee_payer_signing_hash(decoded.fields, decoded.sender), r, s, y, "fee payer")


def cosign_as_fee_payer(
    raw_or_decoded: bytes | str | DecodedTempoTx,
    fee_payer_key: str | bytes | LocalAccount,
    *,
    fee_token: str | None = None,
) -> bytes:
    """Add the sponsor's 0x78 co-signature; returns raw bytes ready to broadcast (SES-03/14).

    `fee_token` (the sponsor's choice) defaults to the one in the transaction, if any.
    """
    decoded = (
        raw_or_decoded
        if isinstance(raw_or_decoded, DecodedTempoTx)
        else decode_tempo_tx(raw_or_decoded)
    )
    if not decoded.sponsored:
        raise TempoTxError("transaction was not signed for a fee payer")
    fields = list(decoded.fields)
    if fee_token is not None:
        fields[10] = bytes.fromhex(fee_token[2:])
    digest = fee_payer_signing_hash(fields, decoded.sender)
    sig = PrivateKey(private_key_bytes(fee_payer_key)).sign_recoverable(digest, hasher=None)
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big")
    fields[11] = [sig[64], r, s]
    return bytes((TX_TYPE,)) + bytes(rlp.encode(fields))


# --- checks against the challenge (SES-14, SES-18) ----------------------------------------------


@dataclass(frozen=True)
class OpenCall:
    payer: str
    payee: str
    token: str
    deposit: int
    salt: str
    authorized_signer: str
    channel_id: str


@dataclass(frozen=True)
class TopUpCall:
    payer: str
    channel_id: str
    additional_deposit: int


def _check_envelope(decoded: DecodedTempoTx, chain_id: int, max_valid_before: int | None) -> None:
    if decoded.chain_id != chain_id:
        raise TempoTxError(f"transaction chain id {decoded.chain_id} is not {chain_id}")
    if decoded.fields[12]:
        raise TempoTxError("transaction carries an authorization list")
    if max_valid_before is not None:
        if decoded.valid_before is None or decoded.valid_before > max_valid_before:
            raise TempoTxError("transaction valid_before is beyond the challenge expiry")
    if len(decoded.calls) != 2:
        raise TempoTxError("transaction must batch exactly [approve, open|topUp]")
    if any(call.value != 0 for call in decoded.calls):
        raise TempoTxError("transaction calls must not carry value")


def _check_approve(call: TempoCall, *, token: str, escrow: str, minimum: int) -> None:
    if call.to != token:
        raise TempoTxError("approve is not on the challenge currency")
    spender, amount = decode_approve(call.data)
    if spender != escrow:
        raise TempoTxError("approve spender is not the escrow")
    if amount < minimum:
        raise TempoTxError("approved amount is below the deposit")


def check_open_tx(
    decoded: DecodedTempoTx,
    *,
    escrow: str,
    token: str,
    payee: str,
    chain_id: int,
    max_valid_before: int | None = None,
) -> OpenCall:
    """SES-14: exactly [currency.approve(escrow, >= deposit), escrow.open(recipient, currency..)].

    `max_valid_before` (the challenge expiry) requires a `valid_before` no later than it.
    """
    escrow, token, payee = escrow.lower(), token.lower(), payee.lower()
    _check_envelope(decoded, chain_id, max_valid_before)
    approve, open_ = decoded.calls
    if open_.to != escrow:
        raise TempoTxError("open is not sent to the escrow contract")
    got_payee, got_token, deposit, salt, signer = decode_open(open_.data)
    if got_payee != payee:
        raise TempoTxError("open payee is not the challenge recipient")
    if got_token != token:
        raise TempoTxError("open token is not the challenge currency")
    if deposit <= 0:
        raise TempoTxError("open deposit must be positive")
    _check_approve(approve, token=token, escrow=escrow, minimum=deposit)
    cid = derive_channel_id(decoded.sender, payee, token, salt, signer, escrow, chain_id)
    return OpenCall(decoded.sender, payee, token, deposit, salt, signer, cid)


def check_topup_tx(
    decoded: DecodedTempoTx,
    *,
    escrow: str,
    token: str,
    channel_id: str,
    additional_deposit: int,
    chain_id: int,
    max_valid_before: int | None = None,
) -> TopUpCall:
    """SES-18: exactly [currency.approve(escrow, >= amount), escrow.topUp(channelId, amount)]."""
    escrow, token, channel_id = escrow.lower(), token.lower(), channel_id.lower()
    _check_envelope(decoded, chain_id, max_valid_before)
    approve, topup = decoded.calls
    if topup.to != escrow:
        raise TempoTxError("topUp is not sent to the escrow contract")
    got_id, amount = decode_topup(topup.data)
    if got_id != channel_id:
        raise TempoTxError("topUp is for another channel")
    if amount != additional_deposit or amount <= 0:
        raise TempoTxError("topUp amount does not match additionalDeposit")
    _check_approve(approve, token=token, escrow=escrow, minimum=amount)
    return TopUpCall(decoded.sender, channel_id, amount)


__all__ = [
    "EXPIRING_NONCE_KEY",
    "DecodedTempoTx",
    "OpenCall",
    "TempoCall",
    "TempoTxError",
    "TopUpCall",
    "build_tempo_tx",
    "check_open_tx",
    "check_topup_tx",
    "cosign_as_fee_payer",
    "decode_approve",
    "decode_open",
    "decode_tempo_tx",
    "decode_topup",
    "encode_approve",
    "encode_open",
    "encode_topup",
    "encode_transfer",
    "fee_payer_of",
    "open_calls",
    "sign_tempo_tx",
    "topup_calls",
    "transfer_call",
]
