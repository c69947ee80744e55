"""Credential and receipt codecs: CORE-22, 23, 25, 32, 33, 40, 41, 43."""

from __future__ import annotations

import base64
import json

import pytest

from mpp.core import (
    Challenge,
    ChallengeIssuer,
    Credential,
    FormatError,
    HeaderTooLarge,
    MalformedCredential,
    ParseError,
    Receipt,
    ReceiptParseError,
    b64url_encode,
    parse_challenge,
    parse_credential,
    parse_receipt,
)
from tests.core.helpers import NOW, REALM, REQUEST, SECRET, header


def _b64(obj: object) -> str:
    return b64url_encode(json.dumps(obj).encode())


def _challenge() -> Challenge:
    issuer = ChallengeIssuer(SECRET, realm=REALM)
    return issuer.issue(
        method="tempo",
        intent="charge",
        request=REQUEST,
        now=NOW,
        description="Pay 1 USD",
        opaque={"order": "42"},
    )


def test_core_22_credential_round_trip() -> None:
    """CORE-22: Payment <base64url-nopad(JSON)> with challenge, payload, source."""
    cred = Credential(_challenge(), {"type": "hash", "hash": "0xab"}, source="did:pkh:eip155:1:0x1")
    wire = cred.to_header()
    assert wire.startswith("Payment ") and "=" not in wire[8:]
    assert parse_credential(wire) == cred
    assert parse_credential("payment\t" + wire[8:]) == cred


@pytest.mark.parametrize("drop", ["challenge", "payload"])
def test_core_22_missing_fields_are_malformed(drop: str) -> None:
    """CORE-22/25: missing challenge or payload → malformed-credential (402)."""
    body = Credential(_challenge(), {"a": "b"}).to_json()
    del body[drop]
    with pytest.raises(MalformedCredential, match=drop) as info:
        parse_credential("Payment " + _b64(body))
    assert info.value.status == 402 and info.value.problem == "malformed-credential"


def test_core_23_echo_is_byte_identical() -> None:
    """CORE-23: the echo carries exactly the params present, wire strings unchanged."""
    c = parse_challenge(header(request="eyAiYSI6IDEgfQ", opaque="eyJrIjoidiJ9"))
    echo = Credential(c, {}).to_json()["challenge"]
    assert echo == {
        "id": "a",
        "realm": "r",
        "method": "tempo",
        "intent": "charge",
        "request": "eyAiYSI6IDEgfQ",
        "opaque": "eyJrIjoidiJ9",
    }
    full = _challenge()
    echo = Credential(full, {}).to_json()["challenge"]
    assert set(echo) == {
        "id",
        "realm",
        "method",
        "intent",
        "request",
        "expires",
        "description",
        "opaque",
    }
    assert echo["request"] == full.request_b64 and echo["opaque"] == full.opaque_b64


@pytest.mark.parametrize(
    "value",
    [
        "Payment !!!",
        "Payment",
        "Bearer abc",
        "Payment " + b64url_encode(b"\xff\xfe"),
        "Payment " + b64url_encode(b"not json"),
        "Payment " + _b64([1, 2]),
        "Payment " + _b64({"challenge": "x", "payload": {}}),
        "Payment " + _b64({"challenge": {"id": "a"}, "payload": {}}),
        "Payment " + _b64({"challenge": {}, "payload": []}),
    ],
)
def test_core_25_malformed_credentials(value: str) -> None:
    """CORE-25: bad base64url, non-UTF-8, non-JSON, not an object, missing fields."""
    with pytest.raises(ParseError):
        parse_credential(value)


def test_core_25_echo_fields_validated() -> None:
    """CORE-25: echo with bad method, empty id or non-string source → malformed."""
    good = Credential(_challenge(), {}).to_json()
    for patch in [{"method": "Tempo"}, {"id": ""}, {"expires": 5}, {"request": "!!"}]:
        body = {**good, "challenge": {**good["challenge"], **patch}}
        with pytest.raises(ParseError):
            parse_credential("Payment " + _b64(body))
    with pytest.raises(ParseError, match="source"):
        parse_credential("Payment " + _b64({**good, "source": 7}))


def test_core_40_credential_size_caps() -> None:
    """CORE-40: a 4 KB credential is accepted; > 64 KiB refused (431) before decoding."""
    cred = Credential(_challenge(), {"signature": "0x" + "ab" * 2100})
    wire = cred.to_header()
    assert len(wire) >= 4096
    assert parse_credential(wire) == cred
    with pytest.raises(HeaderTooLarge) as info:
        parse_credential("Payment " + "A" * (64 * 1024))
    assert info.value.status == 431
    assert isinstance(info.value, ParseError)


def test_core_41_unknown_fields_ignored() -> None:
    """CORE-41: extra credential fields are ignored; payload extras are kept as data."""
    body = Credential(_challenge(), {"foo": 1}).to_json()
    body["extra"] = {"x": 1}
    body["challenge"]["future"] = "y"
    cred = parse_credential("Payment " + _b64(body))
    assert cred.payload == {"foo": 1}


def test_core_43_errors_do_not_echo_the_credential() -> None:
    """CORE-43: error messages never contain the credential."""
    secretish = "c2VjcmV0LXNpZ25hdHVyZS1ieXRlcw"
    for value in [f"Payment {secretish}!", f"Payment {secretish}"]:
        with pytest.raises(ParseError) as info:
            parse_credential(value)
        assert secretish not in str(info.value)
        assert secretish not in json.dumps(info.value.to_problem())


def test_core_32_receipt_round_trip() -> None:
    """CORE-32: base64url-nopad JSON with status, method, timestamp, reference, method fields."""
    r = Receipt.success(
        method="tempo", reference="0xabc", timestamp=NOW, channelId="0x01", spent="25", units=1
    )
    wire = r.to_header()
    data = json.loads(base64.urlsafe_b64decode(wire + "=" * (-len(wire) % 4)))
    assert data["status"] == "success" and data["reference"] == "0xabc"
    assert data["timestamp"] == "2026-03-01T12:00:00.000Z"
    parsed = parse_receipt(wire)
    assert parsed == r and parsed.fields == {"channelId": "0x01", "spent": "25", "units": 1}
    assert parsed.timestamp_at() == NOW


@pytest.mark.parametrize(
    "patch",
    [
        {"status": "failed"},
        {"timestamp": "yesterday"},
        {"timestamp": 5},
        {"method": "Tempo"},
        {"method": None},
        {"reference": None},
    ],
)
def test_core_33_receipt_validation(patch: dict[str, object]) -> None:
    """CORE-33: status must be "success"; timestamp RFC 3339; method and reference present."""
    base = {
        "status": "success",
        "method": "tempo",
        "timestamp": "2026-03-01T12:00:00Z",
        "reference": "x",
    }
    body = {k: v for k, v in {**base, **patch}.items() if v is not None}
    with pytest.raises(ReceiptParseError):
        parse_receipt(_b64(body))
    bad = Receipt(
        method=str(body.get("method", "")),
        reference="x",
        timestamp=str(body.get("timestamp", "")),
        status=str(body.get("status")),
    )
    if patch.get("reference", 1) is not None:
        with pytest.raises(FormatError):
            bad.to_header()


def test_core_41_receipt_accepts_offsets_and_unknown_fields() -> None:
    """CORE-41: unknown receipt fields kept; offsets and fractions accepted."""
    body = {
        "status": "success",
        "method": "tempo",
        "timestamp": "2026-03-01T13:00:00.123456+01:00",
        "reference": "x",
        "future": {"a": 1},
    }
    r = parse_receipt(_b64(body))
    assert r.fields == {"future": {"a": 1}}
    assert r.timestamp_at().isoformat() == "2026-03-01T13:00:00.123456+01:00"


def test_core_32_receipt_reserved_field_clash() -> None:
    """CORE-32: method fields cannot shadow the core four."""
    r = Receipt(
        method="tempo", reference="x", timestamp="2026-03-01T12:00:00Z", fields={"status": "no"}
    )
    with pytest.raises(FormatError):
        r.to_header()


def test_core_40_receipt_size_cap() -> None:
    """CORE-40: oversized receipts are refused before decoding."""
    with pytest.raises(HeaderTooLarge):
        parse_receipt("A" * (64 * 1024 + 1))
