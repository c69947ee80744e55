"""RFC 9530 `Content-Digest` for the challenge `digest` param (CORE-13)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable
from typing import Final

_ALGORITHMS: Final[dict[str, Callable[[bytes], bytes]]] = {
    "sha-256": lambda body: hashlib.sha256(body).digest(),
    "sha-512": lambda body: hashlib.sha512(body).digest(),
}
_MAX_DIGEST_LENGTH: Final = 1024


def content_digest(body: bytes, algorithm: str = "sha-256") -> str:
    """`sha-256=:<base64>:` (an RFC 8941 dictionary member with a byte-sequence value)."""
    raw = _ALGORITHMS[algorithm](body)
    return f"{algorithm}=:{base64.b64encode(raw).decode('ascii')}:"


def parse_content_digest(value: str) -> dict[str, bytes]:
    """Members of a Content-Digest dictionary; also the bare `sha-256=<base64>` peers emit.

    Unknown or undecodable members are dropped; ValueError when nothing usable is left.
    """
    if len(value) > _MAX_DIGEST_LENGTH:
        raise ValueError("digest value too long")
    out: dict[str, bytes] = {}
    for member in value.split(","):
        name, sep, raw = member.strip(" \t").partition("=")
        name = name.strip(" \t").lower()
        if not sep or name not in _ALGORITHMS or name in out:
            continue
        raw = raw.strip(" \t")
        if len(raw) >= 2 and raw[0] == ":" and raw[-1] == ":":
            raw = raw[1:-1]
        try:
            out[name] = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            continue
    if not out:
        raise ValueError("no supported digest")
    return out


def check_content_digest(value: str, body: bytes) -> bool:
    """True when every supported member matches `body` (constant-time comparison)."""
    try:
        members = parse_content_digest(value)
    except ValueError:
        return False
    ok = True
    for name, expected in members.items():
        ok &= hmac.compare_digest(expected, _ALGORITHMS[name](body))
    return ok
