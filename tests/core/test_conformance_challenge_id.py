"""Challenge id (HMAC-SHA256) cases of the public MPP conformance suite (tempoxyz/mpp-tools,
conformance/vectors/challenge-id.json, CORE-18/19), each test named by its case."""

from __future__ import annotations

from typing import Any

import pytest

from mpp.core.binding import challenge_id

S1 = "test-vector-secret-minimum-32-byte-secret"
S2 = "test-secret-key-12345-minimum-32-byte-secret"
API = "api.example.com"
DIGEST = "sha-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE"
AMOUNT = {"amount": "1000000"}
ALPHA = "0x20c0000000000000000000000000000000000001"

CASES: list[tuple[str, dict[str, Any], str]] = [
    ("required_fields_only", {"secret": S1, "request": AMOUNT},
     "6QDs0BmhrI_v67iWeCMvGqQJEFQ6ErWKlk7zi5xL6t0"),
    ("with_expires", {"secret": S1, "request": AMOUNT, "expires": "2025-01-06T12:00:00Z"},
     "ZcHgfEi5_Qyda9NQwUzamsCgCcWXw6N6EH2NLyaSTlg"),
    ("with_digest", {"secret": S1, "request": AMOUNT, "digest": DIGEST},
     "vwnOtW2kwdujK9_uC_taI2e6Jwq86Jwogvq9m--i8eQ"),
    ("with_expires_and_digest", {"secret": S1, "request": AMOUNT, "digest": DIGEST,
                                 "expires": "2025-01-06T12:00:00Z"},
     "HSUJV7QH1E135PSDPlrZ5cLoozV3bv5T4vfVdS3Xyzk"),
    ("with_opaque", {"secret": S1, "request": AMOUNT, "opaque": "trace-123"},
     "1XJ-Ti0DACNe3E1zHvwH6OdnKlhUx6xKxDbhJyexng4"),
    ("with_payment_authorization_header", {"secret": S1, "request": AMOUNT,
                                           "header": "Payment-Authorization"},
     "re8MIMJYpIJ0r_aiizscg6ghtipQM8IpOa_NtpwIU8E"),
    ("authorization_header_is_implicit_default", {"secret": S1, "request": AMOUNT,
                                                  "header": "Authorization"},
     "6QDs0BmhrI_v67iWeCMvGqQJEFQ6ErWKlk7zi5xL6t0"),
    ("multi_field_request", {"secret": S1, "request": {**AMOUNT, "currency": "0x1234",
                                                       "recipient": "0xabcd"}},
     "I8ZLhCXrskUbWuwYSSM0My-wk3mnL9_w8cDlEcs2UFo"),
    ("nested_method_details", {"secret": S1, "request": {**AMOUNT, "currency": "0x1234",
                                                         "methodDetails": {"chainId": 42431}}},
     "W8sYOWDDrcuRcku27vjJoqLX0uAnBmql7qAOuQwdmPo"),
    ("html_sensitive_request_canonicalization",
     {"secret": S1, "request": {"amount": "1500", "currency": "USD",
                                "description": "Access <premium> & analytics",
                                "recipient": "merchant"}},
     "iU2QdYw_u-prmGZWxm58jeBakeYE-ib_u77f9vcW76E"),
    ("empty_request", {"secret": S1, "request": {}},
     "SMpxo_gPWGquX9vAZ-b_OIPsHO3kfdY2s73946Mnwc0"),
    ("different_realm", {"secret": S1, "request": AMOUNT, "realm": "payments.other.com"},
     "NiwWsOUeZDNPegltJVbOHVKR4hHbZR5tnoQ80DVrqyY"),
    ("different_method", {"secret": S1, "request": AMOUNT, "method": "stripe"},
     "IPY59YD2ZWmf3yXnZxbQgYoYejrVB9Nh_rpSkrOeSG0"),
    ("different_intent", {"secret": S1, "request": AMOUNT, "intent": "session"},
     "3bUB3LSxOG-lexqNCMGiV-p_j1UeibqWlA-saIiwo5A"),
    ("basic_charge", {"secret": S2, "request": {**AMOUNT, "currency": ALPHA,
                      "recipient": "0x1234567890abcdef1234567890abcdef12345678"}},
     "Go8tV1muorsPUY3eQxjQ2oBMBDRPuK-jdO_E2sbtti8"),
    ("unicode_in_description",
     {"secret": "unicode-test-key-minimum-32-byte-secret",
      "request": {"amount": "100", "currency": "EUR",
                  "recipient": "0x1111111111111111111111111111111111111111",
                  "description": "Payment for caf\u00e9 \u2615"}},
     "-UB9jxfPEvTmFw7qvLmqJhDZ-lJ-noCp15ROxPHC4BE"),
]  # fmt: skip


@pytest.mark.parametrize("case, given, expected", CASES, ids=[c[0] for c in CASES])
def test_challenge_id_case(case: str, given: dict[str, Any], expected: str) -> None:
    params = {"realm": API, "method": "tempo", "intent": "charge", **given}
    secret = params.pop("secret")
    assert challenge_id(secret, **params) == expected
