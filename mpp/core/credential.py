"""The Payment credential (`Authorization: Payment <base64url JSON>`), CORE-22/23/25/40/41."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mpp.core.challenge import SCHEME, Challenge, challenge_from_params
from mpp.core.encoding import b64url_encode, compact_json, decode_json_b64
from mpp.core.errors import ParseError
from mpp.core.limits import check_credential_size

_ECHO_STRINGS = ("id", "realm", "method", "intent", "request")
_ECHO_OPTIONAL = ("expires", "digest", "description", "opaque", "header")


@dataclass(frozen=True, slots=True)
class Credential:
    """`challenge` is the echoed challenge (wire strings verbatim); `source` a payer DID."""

    challenge: Challenge
    payload: dict[str, Any] = field(default_factory=dict)
    source: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"challenge": self.challenge.echo(), "payload": self.payload}
        if self.source is not None:
            body["source"] = self.source
        return body

    def to_header(self) -> str:
        """`Payment <base64url-nopad(JSON)>`; FormatError when the payload is not JSON-able."""
        return f"{SCHEME} {b64url_encode(compact_json(self.to_json()))}"


def _split_scheme(value: str) -> str:
    v = value.strip(" \t")
    if len(v) < 8 or v[:7].lower() != "payment" or v[7] not in " \t":
        raise ParseError("not a Payment credential")
    return v[8:].lstrip(" \t")


def parse_credential(value: str) -> Credential:
    """Parse one `Authorization` value. Oversized → HeaderTooLarge; malformed → ParseError."""
    check_credential_size(value)  # CORE-40: before any decoding
    token = _split_scheme(value)
    data = decode_json_b64(token, what="credential")
    echo = data.get("challenge")
    if not isinstance(echo, dict):
        raise ParseError("credential challenge is missing or not an object")
    payload = data.get("payload")
    if not isinstance(payload, dict):
        raise ParseError("credential payload is missing or not an object")
    source = data.get("source")
    if source is not None and not isinstance(source, str):
        raise ParseError("credential source is not a string")
    params: dict[str, str] = {}
    for name in _ECHO_STRINGS:
        item = echo.get(name)
        if not isinstance(item, str):
            raise ParseError(f"credential challenge.{name} is missing or not a string")
        params[name] = item
    for name in _ECHO_OPTIONAL:
        item = echo.get(name)
        if item is None:
            continue
        if not isinstance(item, str):
            raise ParseError(f"credential challenge.{name} is not a string")
        params[name] = item
    challenge = challenge_from_params(params, error=ParseError)
    return Credential(challenge=challenge, payload=payload, source=source)
