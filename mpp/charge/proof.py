"""Zero-amount charges (CHG-09): the payer proves who it is by signing the challenge.

EIP-712, no verifying contract. Two shapes exist: the one the public conformance suite and mppx
use, domain {name "MPP", version "2", chainId} with `Proof(string challengeId,string realm)`,
which we sign; and the earlier {version "1"} with `Proof(string challengeId)` (the charge draft
as CHG-09 in docs/protocol.md), which we still accept. The credential's `source` names the
signer as `did:pkh:eip155:<chainId>:<address>`; its chain must be the request's. Pure.
"""

from __future__ import annotations

from typing import Final

from eth_hash.auto import keccak

from mpp.core.errors import InvalidSignature, VerificationFailed
from mpp.session.voucher import recover_digest_signer

__all__ = ["check_proof", "proof_digest", "proof_signer"]

_DOMAIN_TYPEHASH: Final = keccak(b"EIP712Domain(string name,string version,uint256 chainId)")
_PROOF_V1: Final = keccak(b"Proof(string challengeId)")
_PROOF_V2: Final = keccak(b"Proof(string challengeId,string realm)")


def proof_digest(challenge_id: str, chain_id: int, realm: str | None = None) -> bytes:
    """The digest to sign: version 2 (with `realm`), or version 1 without it."""
    version = b"1" if realm is None else b"2"
    domain = keccak(
        _DOMAIN_TYPEHASH + keccak(b"MPP") + keccak(version) + chain_id.to_bytes(32, "big")
    )
    if realm is None:
        struct = keccak(_PROOF_V1 + keccak(challenge_id.encode()))
    else:
        struct = keccak(_PROOF_V2 + keccak(challenge_id.encode()) + keccak(realm.encode()))
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


def check_proof(
    signature: str, challenge_id: str, chain_id: int, source: str | None, realm: str
) -> str:
    """The verified signer of a zero-amount charge (CHG-09), version 2 or 1."""
    expected = proof_signer(source, chain_id)
    shapes = (proof_digest(challenge_id, chain_id, realm), proof_digest(challenge_id, chain_id))
    for digest in shapes:
        try:
            if recover_digest_signer(digest, signature) == expected:
                return expected
        except InvalidSignature:
            raise VerificationFailed("the proof's signature does not recover") from None
    raise VerificationFailed("the proof is not signed by its source")
