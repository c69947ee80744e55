"""Codec-level helpers for the HTTP layer: CORE-24, 28..31, 34, 35, 42; AMB-04/06."""

from __future__ import annotations

import json

import pytest

from mpp.core import (
    PROBLEM_BASE,
    PROBLEM_TYPES,
    Challenge,
    InsecureTransport,
    InvalidChallenge,
    MalformedCredential,
    MethodUnsupported,
    MultipleCredentials,
    PaymentError,
    PolicyDenied,
    error_from_problem,
    error_response,
    errors,
    merge_cache_control,
    parse_challenges,
    payment_credentials,
    payment_required,
    problem_body,
    receipt_cache_control,
    require_secure_url,
    select_payment_credential,
)

CH = Challenge(id="a", realm="r", method="tempo", intent="charge")


def test_core_30_problem_types_and_statuses() -> None:
    """CORE-30: the core codes with their statuses."""
    expected = {
        "payment-required": 402,
        "payment-insufficient": 402,
        "payment-expired": 402,
        "verification-failed": 402,
        "method-unsupported": 400,
        "malformed-credential": 402,
        "invalid-challenge": 402,
    }
    for problem, status in expected.items():
        assert PROBLEM_TYPES[problem].status == status
        assert PROBLEM_TYPES[problem]().type_uri == PROBLEM_BASE + problem


def test_amb_04_status_table() -> None:
    """AMB-04: 410 channel state, 400 multiple/method-unsupported, 409 reverted, 429, 431."""
    assert errors.ChannelNotFound.status == errors.ChannelFinalized.status == 410
    assert MultipleCredentials.status == MethodUnsupported.status == 400
    assert errors.TransactionReverted.status == 409
    assert errors.RateLimited.status == 429
    assert errors.CredentialTooLarge.status == 431


def test_amb_06_expiry_problem_type() -> None:
    """AMB-06: challenge expiry is invalid-challenge; payment-expired is a different type."""
    assert InvalidChallenge().problem == "invalid-challenge"
    assert errors.ChallengeNotFound().problem == "session/challenge-not-found"


def test_core_29_402_always_has_challenge_and_problem_body() -> None:
    """CORE-29, CORE-31, CORE-34: 402 → WWW-Authenticate + problem+json + no-store + Retry-After."""
    resp = payment_required([CH], retry_after=1)
    headers = dict(resp.headers)
    assert resp.status == 402
    assert parse_challenges(headers["WWW-Authenticate"]) == [CH]
    assert headers["Cache-Control"] == "no-store"
    assert headers["Content-Type"] == "application/problem+json"
    assert headers["Retry-After"] == "1"
    body = json.loads(resp.body)
    assert body["type"] == PROBLEM_BASE + "payment-required" and body["status"] == 402
    with pytest.raises(ValueError, match="CORE-29"):
        error_response(MalformedCredential("x"), [])


def test_core_28_403_has_no_challenge() -> None:
    """CORE-28: policy denial → 403 without WWW-Authenticate."""
    resp = error_response(PolicyDenied("no"), [CH])
    assert resp.status == 403
    assert "WWW-Authenticate" not in dict(resp.headers)


def test_core_24_multiple_credentials_detected() -> None:
    """CORE-24: two Payment credentials → MultipleCredentials (400, no challenge)."""
    assert select_payment_credential(["Bearer x"]) is None
    assert select_payment_credential(["Bearer x", "Payment abc"]) == "Payment abc"
    assert payment_credentials(["payment abc, Payment def"]) == ["payment abc", "Payment def"]
    with pytest.raises(MultipleCredentials) as info:
        select_payment_credential(["Payment abc", "Payment def"])
    resp = error_response(info.value, [CH])
    assert resp.status == 400 and "WWW-Authenticate" not in dict(resp.headers)


def test_core_25_26_27_fresh_challenge_errors() -> None:
    """CORE-25, CORE-26, CORE-27: malformed / invalid / failed → 402 + fresh challenge."""
    for err in (MalformedCredential(), InvalidChallenge(), errors.VerificationFailed()):
        resp = error_response(err, [CH])
        assert resp.status == 402 and "WWW-Authenticate" in dict(resp.headers)
        assert json.loads(resp.body)["type"].endswith(err.problem)


def test_core_30_method_unsupported_is_400() -> None:
    """CORE-30: method-unsupported → 400."""
    assert error_response(MethodUnsupported("evm"), [CH]).status == 400


def test_core_29_problem_round_trip_for_clients() -> None:
    """CORE-29: clients decode a problem body back into our exception."""
    err = error_from_problem(problem_body(InvalidChallenge("expired")))
    assert isinstance(err, InvalidChallenge) and err.detail == "expired"
    assert type(error_from_problem(b"garbage")) is PaymentError
    assert type(error_from_problem({"type": "https://other/x"})) is PaymentError


def test_core_34_35_cache_control() -> None:
    """CORE-34: no-store on 402; CORE-35: `private` merged into existing directives."""
    assert receipt_cache_control(None) == "private"
    assert receipt_cache_control("no-cache, max-age=0") == "no-cache, max-age=0, private"
    assert receipt_cache_control("public, max-age=60") == "max-age=60, private"
    assert receipt_cache_control("private") == "private"
    assert merge_cache_control("no-transform", "no-store") == "no-transform, no-store"


@pytest.mark.parametrize(
    ("url", "allow", "ok"),
    [
        ("https://example.com/x", False, True),
        ("http://example.com", False, False),
        ("http://example.com", True, False),
        ("http://127.0.0.1:8545", False, False),
        ("http://127.0.0.1:8545", True, True),
        ("http://[::1]/", True, True),
        ("http://localhost:3000", True, True),
        ("ftp://example.com", True, False),
        ("https://", False, False),
        ("http://[bad", True, False),
    ],
)
def test_core_42_require_secure_url(url: str, allow: bool, ok: bool) -> None:
    """CORE-42: https required; http only to loopback with allow_insecure=True."""
    if ok:
        require_secure_url(url, allow_insecure=allow)
    else:
        with pytest.raises(InsecureTransport):
            require_secure_url(url, allow_insecure=allow)
