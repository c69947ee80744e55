"""Fuzzing the header parsers: random and mutated values raise only our errors.

Contract under test (errors and safety, docs/development.md): each parser of peer input raises only
`mpp.core.errors.PaymentError` subclasses (each maps to a problem type and status), except the
two documented `ValueError` helpers (`parse_content_digest`, `parse_rfc3339`). Whatever parses
re-formats and parses back to the same value, and the binding check on it fails only with our
errors.

Rows: CORE-01..07 (challenge grammar), CORE-22/25 (credential), CORE-24 (several credentials),
CORE-32 (receipt), CORE-36/38 (Accept-Payment), CORE-13 (digest), CORE-14 (RFC 3339),
CORE-17/19 (binding check on damaged echoes), CORE-40 (caps), SES-13/19/41/42 (payload checks).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mpp.core import (
    Challenge,
    PaymentError,
    check_content_digest,
    parse_accept_payment,
    parse_challenge,
    parse_challenges,
    parse_content_digest,
    parse_credential,
    parse_receipt,
    parse_rfc3339,
    rank_offers,
    select_payment_credential,
)
from mpp.session.payloads import parse_payload
from tests.fuzz.strategies import (
    FUZZ_EXAMPLES,
    ISSUER,
    NOW,
    SEED_ACCEPT,
    SEED_CHALLENGES,
    SEED_CREDENTIALS,
    SEED_RECEIPTS,
    SESSION_REQUEST,
    mutated,
    mutated_credentials,
)

FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=2000,  # ms: generous, but a backtracking parser would blow it
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
# ASGI hands header values over as latin-1 decoded bytes: every code point 0..255 can occur.
latin1 = st.binary(max_size=300).map(lambda b: b.decode("latin-1"))
anything = st.text(max_size=300) | latin1


# --- WWW-Authenticate -----------------------------------------------------------------------------


def assert_reformats(c: Challenge) -> None:
    """Whatever we parse we can emit again, identical (CORE-03)."""
    assert parse_challenges(c.to_header()) == [c]


@pytest.mark.parametrize("raw", ["x\x00y", "x\\\x01y", "x\\u000ay", "a\x7fb"])
def test_core_03_quoted_string_controls_refused(raw: str) -> None:
    """CORE-03 / RFC 9110 §5.6.4: qdtext and quoted-pair exclude CTLs other than HTAB.

    NUL, DEL, escaped controls and `\\u000a` (a decoded LF) inside a quoted-string are refused,
    so a parsed challenge can always be formatted again.
    """
    value = 'Payment id="a", realm="r", method="tempo", intent="charge", request="e30"'
    value += f', description="{raw}"'
    with pytest.raises(PaymentError):
        parse_challenges(value)


@FUZZ
@given(mutated(SEED_CHALLENGES) | anything)
@example("Payment")
@example('Payment id="", realm="r", method="tempo", intent="x", request="e30"')
@example('Payment id="a\\ud800", realm="r", method="tempo", intent="x", request="e30"')
def test_core_01_www_authenticate_fuzz(value: str) -> None:
    """CORE-01..07/40: mutated challenges → parsed (and re-formattable) or a PaymentError."""
    for strict in (True, False):
        try:
            found = parse_challenges(value, strict=strict)
        except PaymentError:
            continue
        for c in found:
            assert_reformats(c)
            try:
                ISSUER.check_binding(c, now=NOW)
            except PaymentError:
                pass
    try:
        parse_challenge([value, value])
    except PaymentError:
        pass


# --- Authorization --------------------------------------------------------------------------------


def _exercise_credential(value: str) -> None:
    try:
        cred = parse_credential(value)
    except PaymentError:
        return
    assert parse_credential(cred.to_header()) == cred
    try:
        ISSUER.verify(
            cred.challenge,
            method="tempo",
            intent="session",
            request=SESSION_REQUEST,
            now=NOW,
            body=b"{}",
        )
    except PaymentError:
        pass
    try:
        parse_payload(cred.payload)
    except PaymentError:
        pass


@FUZZ
@given(mutated_credentials() | anything)
@example("Payment ")
@example("Payment e30")
@example("Payment bnVsbA")  # "null"
@example("Payment W10")  # "[]"
def test_core_22_authorization_fuzz(value: str) -> None:
    """CORE-22/25/40, SES-41/42: mutated credentials → parsed or a PaymentError, never more."""
    _exercise_credential(value)


@FUZZ
@given(st.lists(mutated_credentials() | anything | st.sampled_from(SEED_CREDENTIALS), max_size=4))
def test_core_24_several_authorization_values(values: list[str]) -> None:
    """CORE-24: any list of Authorization values → one credential, none, or MultipleCredentials."""
    try:
        chosen = select_payment_credential(values)
    except PaymentError as exc:
        assert exc.status == 400
        return
    if chosen is not None:
        _exercise_credential(chosen)


@FUZZ
@given(st.sampled_from([dict, list, str, int]), st.data())
def test_ses_41_payload_parser_fuzz(kind: type, data: st.DataObject) -> None:
    """SES-13/17/19/41/42: the payload schema check raises MalformedCredential and nothing else."""
    from tests.fuzz.strategies import SEED_PAYLOADS, json_values, mutated_json

    payload: Any = data.draw(mutated_json(data.draw(st.sampled_from(SEED_PAYLOADS))))
    if kind is not dict:
        payload = data.draw(json_values)
    try:
        parse_payload(payload)
    except PaymentError as exc:
        assert exc.problem == "malformed-credential"


# --- Payment-Receipt ------------------------------------------------------------------------------


@FUZZ
@given(mutated(SEED_RECEIPTS) | anything)
def test_core_32_receipt_fuzz(value: str) -> None:
    """CORE-32/33: mutated receipts → parsed (and re-formattable) or a PaymentError."""
    try:
        r = parse_receipt(value)
    except PaymentError:
        return
    assert r.status == "success"
    assert parse_receipt(r.to_header()) == r


# --- Accept-Payment -------------------------------------------------------------------------------


@FUZZ
@given(mutated(SEED_ACCEPT) | anything)
def test_core_36_accept_payment_fuzz(value: str) -> None:
    """CORE-36/38: parse raises only PaymentError; ranking never raises (malformed → ignored)."""
    try:
        ranges = parse_accept_payment(value)
    except PaymentError:
        ranges = []
    for r in ranges:
        assert 0 <= r.q <= 1000
    offers = [("tempo", "session"), ("tempo", "charge"), ("stripe", "charge")]
    ranked = rank_offers(offers, value, key=lambda o: o)
    assert set(ranked) <= set(offers) and ranked


# --- documented ValueError helpers ----------------------------------------------------------------


@FUZZ
@given(
    mutated(["sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:", "sha-512=:AA==:"]) | anything
)
def test_core_13_digest_fuzz(value: str) -> None:
    """CORE-13: parse_content_digest raises ValueError only; check_content_digest never raises."""
    try:
        parse_content_digest(value)
    except ValueError:
        pass
    assert check_content_digest(value, b"{}") in (True, False)


@FUZZ
@given(mutated(["2026-03-01T12:05:00.000Z", "2026-03-01T12:05:00+05:30"]) | anything)
def test_core_14_rfc3339_fuzz(value: str) -> None:
    """CORE-14: parse_rfc3339 raises ValueError only (documented), and the result is aware."""
    try:
        at = parse_rfc3339(value)
    except ValueError:
        return
    assert at.tzinfo is not None


@FUZZ
@given(st.sampled_from(["www", "auth", "receipt"]), st.integers(60_000, 70_000))
def test_core_40_oversized_values(which: str, size: int) -> None:
    """CORE-40: values around the 64 KiB cap → parsed or refused with a PaymentError, quickly."""
    seed = {"www": SEED_CHALLENGES[0], "auth": SEED_CREDENTIALS[0], "receipt": SEED_RECEIPTS[0]}
    value = seed[which] + "A" * (size - len(seed[which]))
    parse = {"www": parse_challenges, "auth": parse_credential, "receipt": parse_receipt}[which]
    try:
        parse(value)
    except PaymentError:
        pass
