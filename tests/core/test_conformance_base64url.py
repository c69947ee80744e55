"""Base64url cases of the public MPP conformance suite (tempoxyz/mpp-tools,
conformance/vectors/base64url.json; RFC 4648 §5 without padding), each test named by its case.
The suite decodes to text: bytes that are not UTF-8 are an encoding error there, as they are for
every JSON value we decode (mpp.core.encoding.decode_json_b64)."""

from __future__ import annotations

import pytest

from mpp.core.encoding import b64url_decode, b64url_encode, decode_json_b64
from mpp.core.errors import ParseError

CASES = [
    ("empty_string", "", ""),
    ("hello_world", "Hello, World!", "SGVsbG8sIFdvcmxkIQ"),
    ("json_object", '{"key":"value"}', "eyJrZXkiOiJ2YWx1ZSJ9"),
    ("url_chars", "https://example.com?foo=bar&baz=qux",
     "aHR0cHM6Ly9leGFtcGxlLmNvbT9mb289YmFyJmJhej1xdXg"),
    ("padding_1_byte", "a", "YQ"),
    ("padding_2_bytes", "ab", "YWI"),
    ("no_padding", "abc", "YWJj"),
    ("url_safe_chars", ">>>???", "Pj4-Pz8_"),
    ("special_ascii", "!@#$%^&*()[]{}|;:,.<>?", "IUAjJCVeJiooKVtde318OzosLjw-Pw"),
    ("whitespace", "tabs\tand\nnewlines", "dGFicwlhbmQKbmV3bGluZXM"),
]  # fmt: skip


@pytest.mark.parametrize("case, decoded, encoded", CASES, ids=[c[0] for c in CASES])
def test_base64url_case(case: str, decoded: str, encoded: str) -> None:
    assert b64url_encode(decoded.encode()) == encoded
    assert b64url_decode(encoded).decode() == decoded


def test_case_invalid_characters_rejected() -> None:
    with pytest.raises(ParseError):
        b64url_decode("not-valid!!!")


def test_case_invalid_utf8_rejected() -> None:
    assert b64url_decode("_w") == b"\xff"  # valid base64url...
    with pytest.raises(ParseError):  # ...but never valid text where we decode one
        decode_json_b64("_w")
