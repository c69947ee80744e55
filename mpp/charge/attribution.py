"""The MPP attribution memo peers put on a charge's primary transfer (`transferWithMemo`).

Not in the charge spec, but the official SDKs send it and their servers (and the public
conformance suite) require it when a request names no memo: the primary transfer is bound to the
challenge it pays, so it cannot pay another.
32 bytes: keccak256("mpp")[:4] · version 0x01 · keccak256(server id = the challenge's realm)[:10]
· keccak256(client id)[:10] (zeros: anonymous) · keccak256(challenge id)[:7]. Pure.
"""

from __future__ import annotations

from typing import Final

from eth_hash.auto import keccak

__all__ = ["attribution_memo", "bound_to"]

_TAG: Final = keccak(b"mpp")[:4]
_VERSION: Final = 1


def attribution_memo(challenge_id: str, realm: str, client_id: str | None = None) -> str:
    client = keccak(client_id.encode())[:10] if client_id else bytes(10)
    memo = _TAG + bytes((_VERSION,)) + keccak(realm.encode())[:10] + client
    return "0x" + (memo + keccak(challenge_id.encode())[:7]).hex()


def bound_to(memo: str | None, challenge_id: str, realm: str) -> bool:
    """`memo` is an attribution memo for this challenge and realm (any client id)."""
    if memo is None or len(memo) != 66:
        return False
    try:
        raw = bytes.fromhex(memo[2:])
    except ValueError:
        return False
    return (
        raw[:4] == _TAG
        and raw[4] == _VERSION
        and raw[5:15] == keccak(realm.encode())[:10]
        and raw[25:] == keccak(challenge_id.encode())[:7]
    )
