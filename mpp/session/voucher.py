"""Vouchers: channel ids, the EIP-712 voucher digest, signing and fast signer recovery.

Rows: SES-06 (channelId), SES-08 (domain), SES-09 (Voucher type), SES-10 (65/64-byte forms,
v in {27,28}), SES-11 (low-s), SES-24 (uint128 cap), AMB-07 (normalize 64 -> 65 bytes).

The hot path (one call per voucher on the server) is keccak + libsecp256k1 through coincurve
with an lru-cached domain separator: no `encode_typed_data` per voucher. eth-account stays the
oracle in the tests.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Final

from coincurve import PrivateKey, PublicKey
from eth_hash.auto import keccak

from mpp.core.amounts import MAX_AMOUNT
from mpp.core.errors import InvalidSignature, MalformedCredential, SignerMismatch

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

__all__ = [
    "DEFAULT_DOMAIN_NAME",
    "MAX_AMOUNT",
    "SECP256K1_HALF_N",
    "SECP256K1_N",
    "VOUCHER_TYPEHASH",
    "InvalidAmount",
    "InvalidVoucherField",
    "channel_id",
    "domain_separator",
    "normalize_signature",
    "private_key_bytes",
    "recover_digest_signer",
    "recover_voucher_signer",
    "sign_digest",
    "sign_voucher",
    "verify_voucher",
    "voucher_digest",
]

DEFAULT_DOMAIN_NAME: Final = "Tempo Stream Channel"
DOMAIN_VERSION: Final = "1"
SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1_HALF_N: Final = SECP256K1_N // 2

EIP712_DOMAIN_TYPEHASH: Final[bytes] = keccak(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
VOUCHER_TYPEHASH: Final[bytes] = keccak(b"Voucher(bytes32 channelId,uint128 cumulativeAmount)")

_ZERO12: Final = b"\x00" * 12
_LOW_255: Final = (1 << 255) - 1


class InvalidVoucherField(MalformedCredential, ValueError):
    """A voucher field (channel id, address, amount) is not well formed."""


class InvalidAmount(InvalidVoucherField):
    """A cumulative amount outside 0..2^128-1 (SES-24), or not an int."""


# --- small parsers ------------------------------------------------------------------------------


def _hex_bytes(value: str | bytes, length: int, what: str) -> bytes:
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
    elif isinstance(value, str) and value[:2] in ("0x", "0X"):
        try:
            raw = bytes.fromhex(value[2:])
        except ValueError:
            raise InvalidVoucherField(f"{what} is not hex") from None
    else:
        raise InvalidVoucherField(f"{what} must be 0x-prefixed hex")
    if len(raw) != length:
        raise InvalidVoucherField(f"{what} must be {length} bytes, got {len(raw)}")
    return raw


def _address(value: str | bytes, what: str = "address") -> bytes:
    return _hex_bytes(value, 20, what)


def _amount(value: int) -> int:
    # bool is an int subclass; a True amount is a caller bug, not one unit.
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidAmount("cumulative amount must be an int (base units)")
    if value < 0 or value > MAX_AMOUNT:
        raise InvalidAmount("cumulative amount outside uint128 range")
    return value


def private_key_bytes(key: str | bytes | LocalAccount) -> bytes:
    """32 raw bytes of a private key given as hex, bytes or an eth_account LocalAccount."""
    if isinstance(key, str):
        text = key[2:] if key[:2] in ("0x", "0X") else key
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise ValueError("private key is not hex") from None
    elif isinstance(key, bytes | bytearray):
        raw = bytes(key)
    else:
        raw = bytes(key.key)
    if len(raw) != 32:
        raise ValueError("private key must be 32 bytes")
    if not 0 < int.from_bytes(raw, "big") < SECP256K1_N:
        raise ValueError("private key is zero or not below the secp256k1 group order")
    return raw


# --- channel id (SES-06) ------------------------------------------------------------------------


def channel_id(
    payer: str,
    payee: str,
    token: str,
    salt: str | bytes,
    authorized_signer: str,
    escrow: str,
    chain_id: int,
) -> str:
    """keccak256(abi.encode(payer, payee, token, salt, authorizedSigner, escrow, chainId)).

    `authorized_signer` is the raw argument of `open` (0x0 when not delegated), SES-06.
    """
    words = b"".join(
        (
            _ZERO12 + _address(payer, "payer"),
            _ZERO12 + _address(payee, "payee"),
            _ZERO12 + _address(token, "token"),
            _hex_bytes(salt, 32, "salt"),
            _ZERO12 + _address(authorized_signer, "authorizedSigner"),
            _ZERO12 + _address(escrow, "escrow"),
            chain_id.to_bytes(32, "big"),
        )
    )
    return "0x" + keccak(words).hex()


# --- EIP-712 digest (SES-08/09) -----------------------------------------------------------------


@lru_cache(maxsize=256)
def _domain_separator(chain_id: int, escrow20: bytes, name: str) -> bytes:
    return keccak(
        EIP712_DOMAIN_TYPEHASH
        + keccak(name.encode())
        + keccak(DOMAIN_VERSION.encode())
        + chain_id.to_bytes(32, "big")
        + _ZERO12
        + escrow20
    )


def domain_separator(chain_id: int, escrow: str, name: str = DEFAULT_DOMAIN_NAME) -> bytes:
    """The EIP-712 domain separator {name, version "1", chainId, verifyingContract} (SES-08)."""
    return _domain_separator(chain_id, _address(escrow, "escrow"), name)


def voucher_digest(
    channel_id: str | bytes,
    cumulative_amount: int,
    *,
    chain_id: int,
    escrow: str,
    name: str = DEFAULT_DOMAIN_NAME,
) -> bytes:
    """The 32-byte EIP-712 digest of Voucher(bytes32 channelId,uint128 cumulativeAmount)."""
    struct_hash = keccak(
        VOUCHER_TYPEHASH
        + _hex_bytes(channel_id, 32, "channelId")
        + _amount(cumulative_amount).to_bytes(32, "big")
    )
    separator = _domain_separator(chain_id, _address(escrow, "escrow"), name)
    return keccak(b"\x19\x01" + separator + struct_hash)


# --- signatures (SES-10/11, AMB-07) -------------------------------------------------------------


@lru_cache(maxsize=16)
def _signer(secret: bytes) -> PrivateKey:
    # Building a PrivateKey derives its public key (the costly part of signing): reuse it.
    return PrivateKey(secret)


def sign_voucher(
    key: str | bytes | LocalAccount,
    channel_id: str | bytes,
    cumulative_amount: int,
    *,
    chain_id: int,
    escrow: str,
    name: str = DEFAULT_DOMAIN_NAME,
) -> str:
    """65-byte r||s||v hex, v in {27,28}, low-s, deterministic (RFC 6979 via libsecp256k1)."""
    digest = voucher_digest(
        channel_id, cumulative_amount, chain_id=chain_id, escrow=escrow, name=name
    )
    return sign_digest(key, digest)


def sign_digest(key: str | bytes | LocalAccount, digest: bytes) -> str:
    """Sign a 32-byte EIP-712 digest: 65-byte r||s||v hex, v in {27,28}, low-s."""
    sig = _signer(private_key_bytes(key)).sign_recoverable(digest, hasher=None)
    # libsecp256k1 always produces low-s; recid is 0/1.
    return "0x" + sig[:64].hex() + format(sig[64] + 27, "02x")


def _parse_signature(signature: str | bytes) -> tuple[bytes, bytes, int]:
    """(r, s, recovery id 0/1) from a 65- or 64-byte signature, enforcing SES-10/11."""
    if isinstance(signature, str):
        if signature[:2] not in ("0x", "0X"):
            raise InvalidSignature("signature must be 0x-prefixed hex")
        try:
            raw = bytes.fromhex(signature[2:])
        except ValueError:
            raise InvalidSignature("signature is not hex") from None
    elif isinstance(signature, bytes | bytearray):
        raw = bytes(signature)
    else:
        raise InvalidSignature("signature must be hex or bytes")
    if len(raw) == 65:
        r, s, v = raw[:32], raw[32:64], raw[64]
        if v not in (27, 28):
            raise InvalidSignature("signature v must be 27 or 28")
        recid = v - 27
    elif len(raw) == 64:
        # EIP-2098 compact form: the top bit of `vs` is the y parity.
        vs = int.from_bytes(raw[32:], "big")
        r, s, recid = raw[:32], (vs & _LOW_255).to_bytes(32, "big"), vs >> 255
    else:
        raise InvalidSignature(f"signature must be 65 or 64 bytes, got {len(raw)}")
    r_int = int.from_bytes(r, "big")
    s_int = int.from_bytes(s, "big")
    if not 0 < r_int < SECP256K1_N:
        raise InvalidSignature("signature r out of range")
    if not 0 < s_int <= SECP256K1_HALF_N:
        raise InvalidSignature("signature s is not in the lower half order (high-s)")
    return r, s, recid


def normalize_signature(signature: str | bytes) -> str:
    """The canonical 65-byte lowercase hex form (64-byte EIP-2098 expanded, AMB-07).

    Refuses malformed, high-s and v not in {27,28} signatures with InvalidSignature.
    """
    r, s, recid = _parse_signature(signature)
    return "0x" + r.hex() + s.hex() + format(recid + 27, "02x")


@lru_cache(maxsize=4096)
def _address_of(public_key: bytes) -> str:
    return "0x" + keccak(public_key[1:])[12:].hex()


def recover_voucher_signer(
    channel_id: str | bytes,
    cumulative_amount: int,
    signature: str | bytes,
    *,
    chain_id: int,
    escrow: str,
    name: str = DEFAULT_DOMAIN_NAME,
) -> str:
    """The lowercase address that signed this voucher (SES-20 steps 1-2).

    Signature problems raise InvalidSignature; bad ids/amounts raise InvalidVoucherField.
    """
    digest = voucher_digest(
        channel_id, cumulative_amount, chain_id=chain_id, escrow=escrow, name=name
    )
    return recover_digest_signer(digest, signature)


def recover_digest_signer(digest: bytes, signature: str | bytes) -> str:
    """The lowercase address that signed a 32-byte EIP-712 `digest` (low-s, v 27/28 or the
    EIP-2098 compact form); InvalidSignature otherwise."""
    r, s, recid = _parse_signature(signature)
    try:
        public_key = PublicKey.from_signature_and_message(
            r + s + bytes((recid,)), digest, hasher=None
        )
    except Exception:  # libsecp256k1 refuses points not on the curve
        raise InvalidSignature("signature does not recover a public key") from None
    return _address_of(public_key.format(compressed=False))


def verify_voucher(
    channel_id: str | bytes,
    cumulative_amount: int,
    signature: str | bytes,
    *,
    expected_signer: str,
    chain_id: int,
    escrow: str,
    name: str = DEFAULT_DOMAIN_NAME,
) -> None:
    """Recover and compare with the on-chain expected signer (SES-12); raise SignerMismatch."""
    signer = recover_voucher_signer(
        channel_id, cumulative_amount, signature, chain_id=chain_id, escrow=escrow, name=name
    )
    if signer != expected_signer.lower():
        raise SignerMismatch("voucher is not signed by the channel's authorized signer")
