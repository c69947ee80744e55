"""base64url without padding, JCS (RFC 8785), JSON-in-base64url wire values (CORE-11/12/22)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

import rfc8785

from mpp.core.errors import FormatError, ParseError

_JSON_WS = (" ", "\t", "\r", "\n")
_TO_STD = bytes.maketrans(b"-_", b"+/")
_MAX_SAFE_INT = 2**53 - 1
_PLAIN = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def b64url_encode(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, *, what: str = "value", error: type[ParseError] = ParseError) -> bytes:
    """Decode base64url; padding is tolerated, any other character outside the alphabet is not."""
    body = text.rstrip("=")
    pad = -len(body) % 4
    if len(text) - len(body) not in (0, pad) or pad == 3 or "+" in body or "/" in body:
        raise error(f"{what} is not valid base64url")
    try:
        raw = (body + "=" * pad).encode("ascii").translate(_TO_STD)
        return binascii.a2b_base64(raw, strict_mode=True)
    except (binascii.Error, ValueError):  # UnicodeEncodeError is a ValueError
        raise error(f"{what} is not valid base64url") from None


def _plain_json(value: Any) -> bool:
    """True when json.dumps(sort_keys) is byte-identical to JCS for `value`.

    That holds without floats, without integers beyond 2**53, and with BMP-only keys (Python sorts
    by code point, JCS by UTF-16 unit; they agree inside the BMP).
    """
    if isinstance(value, str) or value is None or value is True or value is False:
        return True
    if isinstance(value, int):
        return -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or (not key.isascii() and max(key) > "\uffff"):
                return False
            if not _plain_json(item):
                return False
        return True
    if isinstance(value, list | tuple):
        return all(_plain_json(item) for item in value)
    return False


def jcs(value: Any) -> bytes:
    """RFC 8785 canonical JSON (CORE-11). Fast path through `json` when provably identical."""
    if _plain_json(value):
        try:
            return _COMPACT.encode(value).encode("utf-8")
        except UnicodeEncodeError:
            pass  # lone surrogates: let rfc8785 decide
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise FormatError(f"value cannot be canonicalized (JCS): {type(exc).__name__}") from None


def encode_json_b64(value: Any) -> str:
    """base64url_nopad(JCS(value)): the wire form of `request` and `opaque`."""
    return b64url_encode(jcs(value))


def encode_opaque(opaque: Mapping[str, str]) -> str:
    """CORE-12: opaque must be a flat string -> string object."""
    for key, item in opaque.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise FormatError("opaque must be a flat object of string keys and string values")
    return encode_json_b64(dict(opaque))


def compact_json(value: Any) -> bytes:
    """Compact JSON (UTF-8) for credential and receipt bodies, where JCS is not required."""
    try:
        return _PLAIN.encode(value).encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError("value holds unpaired surrogates") from None


def decode_json_b64(
    text: str, *, what: str = "value", error: type[ParseError] = ParseError
) -> dict[str, Any]:
    """Decode base64url(JSON object); anything else raises `error` naming `what`."""
    raw = b64url_decode(text, what=what, error=error)
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{what} is not UTF-8") from None
    if decoded[:1] in _JSON_WS:
        decoded = decoded.lstrip(" \t\r\n")
    try:
        obj, end = _DECODER.raw_decode(decoded)
        if end != len(decoded) and decoded[end:].strip(" \t\r\n"):
            raise ValueError("trailing data")
    except (ValueError, RecursionError):
        raise error(f"{what} is not JSON") from None
    if not isinstance(obj, dict):
        raise error(f"{what} is not a JSON object")
    return obj


def decode_opaque(text: str, *, error: type[ParseError] = ParseError) -> dict[str, str]:
    obj = decode_json_b64(text, what="opaque", error=error)
    for item in obj.values():
        if not isinstance(item, str):
            raise error("opaque is not a flat object of strings")
    return obj
