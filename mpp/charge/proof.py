"""Zero-amount charges (CHG-09): the payer proves who it is by signing the challenge id.

EIP-712 with the domain {name "MPP", version "1", chainId} (no verifying contract) and the type
`Proof(string challengeId)`. The credential's `source` names the signer as
`did:pkh:eip155:<chainId>:<address>`; its chain must be the request's. Pure.
"""

from __future__ import annotations

from typing import Final

from eth_hash.auto import keccak

from mpp.core.errors import InvalidSignature, VerificationFailed
from mpp.session.voucher import recover_digest_signer

__all__ = ["check_proof", "proof_digest", "proof_signer"]

_DOMAIN_TYPEHASH: Final = keccak(b"EIP712Domain(string name,string version,uint256 chainId)")
_PROOF_TYPEHASH: Final = keccak(b"Proof(string challengeId)")


def proof_digest(challenge_id: str, chain_id: int) -> bytes:
    domain = keccak(_DOMAIN_TYPEHASH + keccak(b"MPP") + keccak(b"1") + chain_id.to_bytes(32, "big"))
    struct = keccak(_PROOF_TYPEHASH + keccak(challenge_id.encode()))
    return keccak(b"\x19\x01" + domain + struct)


def proof_signer(source: str | None, chain_id: int) -> str:
    """The address `source` names, when it is a did:pkh on `chain_id`; VerificationFailed
    otherwise."""
    prefix = f"did:pkh:eip155:{chain_id}:"
    if source is None or not source.lower().startswith(prefix):
        raise VerificationFailed(f"a proof needs a source did:pkh:eip155:{chain_id}:<address>")
    address = source[len(prefix) :].lower()
    if len(address) != 42 or not address.startswith("0x"):
        raise VerificationFailed("the proof's source is not an address")
    return address


def check_proof(signature: str, challenge_id: str, chain_id: int, source: str | None) -> str:
    """The verified signer of a zero-amount charge (CHG-09)."""
    expected = proof_signer(source, chain_id)
    try:
        signer = recover_digest_signer(proof_digest(challenge_id, chain_id), signature)
    except InvalidSignature:
        raise VerificationFailed("the proof's signature does not recover") from None
    if signer != expected:
        raise VerificationFailed("the proof is not signed by its source")
    return expected
