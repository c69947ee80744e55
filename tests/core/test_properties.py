"""Property tests (hypothesis): format → parse identity; arbitrary input → only our errors.

Rows: CORE-01..05 (grammar), CORE-22 (credential), CORE-32 (receipt), CORE-40/41.
"""

from __future__ import annotations

import string
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpp.core import (
    Challenge,
    Credential,
    FormatError,
    PaymentError,
    Receipt,
    format_rfc3339,
    parse_accept_payment,
    parse_challenges,
    parse_credential,
    parse_receipt,
)

OURS = (PaymentError, FormatError)

# Text that a header may carry: anything but controls (CR/LF are refused by design, CORE-03).
header_text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=40)
names = st.from_regex(r"[a-z]{1,8}", fullmatch=True)
intents = st.from_regex(r"[A-Za-z0-9-]{1,10}", fullmatch=True)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@st.composite
def challenges(draw: st.DrawFn) -> Challenge:
    opaque = draw(st.none() | st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3))
    return Challenge(
        id=draw(header_text.filter(bool)),
        realm=draw(header_text.filter(bool)),
        method=draw(names),
        intent=draw(intents),
        request=draw(json_objects),
        expires=draw(st.none() | moments.map(format_rfc3339)),
        digest=draw(st.none() | header_text),
        description=draw(st.none() | header_text),
        opaque=opaque,
        header=draw(st.none() | st.sampled_from(["Payment-Authorization", "X-Pay"])),
    )


@settings(max_examples=300, deadline=None)
@given(challenges())
def test_core_01_challenge_format_parse_identity(c: Challenge) -> None:
    """CORE-01/03: parse(format(c)) == c for any valid challenge."""
    assert parse_challenges(c.to_header()) == [c]


@settings(max_examples=100, deadline=None)
@given(st.lists(challenges(), min_size=1, max_size=4), st.sampled_from([", ", ",", " , "]))
def test_core_04_joined_challenges_identity(cs: list[Challenge], sep: str) -> None:
    """CORE-04: several challenges joined in one value come back in order."""
    assert parse_challenges(sep.join(c.to_header() for c in cs)) == cs


@settings(max_examples=200, deadline=None)
@given(challenges(), json_objects, st.none() | header_text)
def test_core_22_credential_format_parse_identity(
    c: Challenge, payload: dict[str, Any], source: str | None
) -> None:
    """CORE-22: parse(format(credential)) == credential."""
    cred = Credential(c, payload, source)
    assert parse_credential(cred.to_header()) == cred


@settings(max_examples=200, deadline=None)
@given(
    names,
    st.text(max_size=20),
    moments,
    st.dictionaries(st.text(max_size=8), json_values, max_size=4),
)
def test_core_32_receipt_format_parse_identity(
    method: str, reference: str, at: datetime, fields: dict[str, Any]
) -> None:
    """CORE-32: parse(format(receipt)) == receipt."""
    fields = {
        k: v for k, v in fields.items() if k not in {"status", "method", "timestamp", "reference"}
    }
    r = Receipt.success(method=method, reference=reference, timestamp=at, **fields)
    assert parse_receipt(r.to_header()) == r


header_alphabet = st.sampled_from([*string.printable, "é", "\u2603", "\x00", "\\", '"', ","])
header_like = st.lists(
    st.sampled_from(
        ["Payment ", "Bearer ", "id=", "realm=", '"', "\\", ",", " ", "=", "e30", "request=", "abc"]
    )
    | header_alphabet,
    max_size=60,
).map("".join)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200) | header_like)
def test_core_40_random_headers_raise_only_our_errors(value: str) -> None:
    """CORE-40/41: arbitrary strings never raise anything but our own errors."""
    for parse in (parse_challenges, parse_credential, parse_receipt, parse_accept_payment):
        try:
            parse(value)
        except OURS:
            pass
    try:
        parse_credential("Payment " + value)
    except OURS:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_core_25_random_bytes_raise_only_our_errors(raw: bytes) -> None:
    """CORE-25: random bytes as header values (latin-1, as ASGI gives them) → only our errors."""
    from mpp.core import b64url_encode

    text = raw.decode("latin-1")
    for value in (text, "Payment " + b64url_encode(raw), b64url_encode(raw)):
        for parse in (parse_challenges, parse_credential, parse_receipt):
            try:
                parse(value)
            except OURS:
                pass


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "value",
    [
        "Payment " + "\\" * 12_000,
        'Payment description="' + "\\" * 12_000,
        'Payment description="' + "\\\\" * 6_000 + '"',
        'Payment description="' + '\\"' * 6_000,
        "Payment " + "," * 10_000,
        "Payment id=" + "," * 10_000,
        "," * 10_000,
        'Payment a="' + '",a="' * 2_000,
        "Payment " + "a=b, " * 3_000,
        "Payment " + " " * 12_000 + "x",
        "Payment " + "\\u" * 6_000,
        "Payment " + "x=" * 6_000,
        "Payment " + "=" * 12_000,
        "Payment " + '"' * 12_000,
        "a " * 6_000,
    ],
    ids=lambda v: v[:12] + f"...{len(v)}",
)
def test_core_40_pathological_headers_are_linear(value: str) -> None:
    """CORE-40: 12,000 backslashes or 10,000 commas parse or fail quickly (no backtracking)."""
    start = time.perf_counter()
    for parse in (parse_challenges, parse_credential, parse_receipt, parse_accept_payment):
        try:
            parse(value)
        except OURS:
            pass
    assert time.perf_counter() - start < 1.0


def test_core_40_pathological_scales_linearly() -> None:
    """CORE-40: doubling a pathological input does not quadruple the time (loose bound)."""

    def cost(n: int) -> float:
        value = 'Payment description="' + "\\a" * n + '", ' + "," * n
        start = time.perf_counter()
        for _ in range(3):
            try:
                parse_challenges(value)
            except OURS:
                pass
        return time.perf_counter() - start

    small, big = cost(4_000), cost(16_000)
    assert big < small * 16 + 0.05  # quadratic would be ~16x; linear ~4x


def test_core_14_rfc3339_output_parses_back() -> None:
    """CORE-14: our own expires format is RFC 3339 with milliseconds and Z."""
    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert format_rfc3339(at) == "2026-01-02T03:04:05.678Z"
    assert format_rfc3339(at + timedelta(hours=1)).endswith("Z")
