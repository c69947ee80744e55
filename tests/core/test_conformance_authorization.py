"""Authorization (credential) parsing cases of the public MPP conformance suite
(tempoxyz/mpp-tools, conformance/vectors/authorization.json, CORE-21..23), each test named by its
case. The wires are built here the way the suite's are: base64url (no padding) of the credential
JSON, whose challenge echo carries `request` as its base64url string."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from mpp.core.credential import parse_credential
from mpp.core.errors import MalformedCredential


def _b64(data: Any) -> str:
    return (
        base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode())
        .decode()
        .rstrip("=")
    )


def _wire(challenge: dict[str, Any], payload: dict[str, Any], **extra: Any) -> str:
    echo = {**challenge, "request": _b64(challenge["request"])}
    return "Payment " + _b64({"challenge": echo, "payload": payload, **extra})


BASE = {"id": "ch_abc123", "realm": "api.example.com", "method": "tempo", "intent": "charge",
        "request": {"amount": "1000000", "currency": "0x20c0000000000000000000000000000000000001",
                    "recipient": "0x1234567890abcdef1234567890abcdef12345678"}}  # fmt: skip


def test_case_basic_credential() -> None:
    payload = {"type": "transaction", "signature": "0x" + "ab" * 65}
    cred = parse_credential(_wire(BASE, payload))
    assert cred.challenge.id == "ch_abc123" and cred.challenge.request == BASE["request"]
    assert cred.payload == payload and cred.source is None
    assert parse_credential(cred.to_header()) == cred  # roundtrip


def test_case_credential_with_source() -> None:
    source = "did:pkh:eip155:42431:0x1234567890abcdef1234567890abcdef12345678"
    cred = parse_credential(_wire(BASE, {"type": "hash", "hash": "0x" + "12" * 32}, source=source))
    assert cred.source == source


def test_case_credential_with_expires() -> None:
    challenge = {**BASE, "intent": "authorize", "expires": "2026-01-29T12:30:00Z"}
    cred = parse_credential(
        _wire(challenge, {"type": "transaction", "signature": "0x" + "fe" * 64})
    )
    assert cred.challenge.expires == "2026-01-29T12:30:00Z"


def test_case_credential_with_payment_authorization_header() -> None:
    challenge = {**BASE, "id": "ch_header", "request": {}, "header": "Payment-Authorization"}
    cred = parse_credential(_wire(challenge, {}))
    assert cred.challenge.header == "Payment-Authorization"
    assert parse_credential(cred.to_header()) == cred


@pytest.mark.parametrize(
    "case, wire",
    [
        ("error_missing_payment_prefix", "Bearer " + _b64({"challenge": {}})),
        ("error_invalid_base64url", "Payment not-valid!!!"),
        ("error_missing_challenge", "Payment " + _b64({"payload": {"type": "transaction"}})),
        ("error_missing_challenge_id",
         "Payment " + _b64({"challenge": {"realm": "api", "method": "tempo", "intent": "charge",
                                          "request": "e30"}, "payload": {}})),
        ("error_invalid_json_structure", "Payment " + _b64([])),
    ],
)  # fmt: skip
def test_cases_that_fail(case: str, wire: str) -> None:
    with pytest.raises(MalformedCredential):
        parse_credential(wire)
