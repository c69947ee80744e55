"""Challenge binding and the issuer/verifier: CORE-12, 13, 15, 17..21, AMB-06, AMB-18."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from datetime import timedelta

import pytest

from mpp.core import (
    HMAC_SLOTS,
    Challenge,
    ChallengeIssuer,
    FormatError,
    InvalidChallenge,
    VerificationFailed,
    b64url_encode,
    challenge_id,
    content_digest,
    encode_json_b64,
    hmac_input,
    parse_challenge,
)
from mpp.core.binding import Slot
from tests.core.helpers import NOW, REALM, REQUEST, SECRET


def test_core_18_hmac_binding_slots() -> None:
    """CORE-18: 7 slots, "" when absent; id = base64url_nopad(HMAC-SHA256)."""
    request_b64 = encode_json_b64({"amount": "1000000"})
    expected_input = "api.example.com|tempo|charge|eyJhbW91bnQiOiIxMDAwMDAwIn0|||"
    values = {"realm": REALM, "method": "tempo", "intent": "charge", "request": request_b64}
    assert hmac_input(values) == expected_input
    mac = hmac.new(SECRET.encode(), expected_input.encode(), hashlib.sha256).digest()
    got = challenge_id(
        SECRET, realm=REALM, method="tempo", intent="charge", request={"amount": "1000000"}
    )
    assert got == b64url_encode(mac) == "6QDs0BmhrI_v67iWeCMvGqQJEFQ6ErWKlk7zi5xL6t0"
    # The request may also be given as the wire string.
    assert got == challenge_id(
        SECRET, realm=REALM, method="tempo", intent="charge", request=request_b64
    )


def test_core_18_all_slots_in_order() -> None:
    """CORE-18: realm|method|intent|request|expires|digest|opaque."""
    values = {
        "realm": "R",
        "method": "m",
        "intent": "i",
        "request": "Q",
        "expires": "E",
        "digest": "D",
        "opaque": "O",
    }
    assert hmac_input(values) == "R|m|i|Q|E|D|O"


def test_amb_18_header_slot_before_opaque() -> None:
    """AMB-18: the -01 header slot sits before opaque and is omitted for Authorization."""
    assert [s.name for s in HMAC_SLOTS][-2:] == ["header", "opaque"]
    base = {"realm": "R", "method": "m", "intent": "i", "request": "Q", "opaque": "O"}
    assert hmac_input(base) == "R|m|i|Q|||O"
    assert hmac_input({**base, "header": "Payment-Authorization"}) == (
        "R|m|i|Q|||Payment-Authorization|O"
    )
    kw = {"realm": REALM, "method": "tempo", "intent": "charge", "request": REQUEST}
    plain = challenge_id(SECRET, **kw)  # type: ignore[arg-type]
    assert plain == challenge_id(SECRET, header="Authorization", **kw)  # type: ignore[arg-type]
    assert plain == challenge_id(SECRET, header="authorization", **kw)  # type: ignore[arg-type]
    assert plain != challenge_id(SECRET, header="Payment-Authorization", **kw)  # type: ignore[arg-type]


def test_amb_18_slot_list_accepts_an_inserted_slot() -> None:
    """AMB-18: a new optional slot is one entry in the list; absent, it changes nothing."""
    slots = (*HMAC_SLOTS[:6], Slot("future", False), *HMAC_SLOTS[6:])
    values = {"realm": "R", "method": "m", "intent": "i", "request": "Q"}
    assert hmac_input(values, slots) == hmac_input(values)
    assert hmac_input({**values, "future": "F"}, slots) == "R|m|i|Q|||F|"


def test_core_21_short_secret_refused() -> None:
    """CORE-21: secrets under 32 bytes are refused."""
    with pytest.raises(ValueError, match="32 bytes"):
        challenge_id("x" * 31, realm=REALM, method="tempo", intent="charge", request={})
    with pytest.raises(ValueError):
        ChallengeIssuer(b"short", realm=REALM)


def test_core_12_opaque_flat_strings_only_and_echo_verbatim() -> None:
    """CORE-12: opaque must be string→string; its wire form is bound as is."""
    issuer = ChallengeIssuer(SECRET, realm=REALM)
    with pytest.raises(FormatError):
        issuer.issue(
            method="tempo",
            intent="charge",
            request=REQUEST,
            now=NOW,
            opaque={"n": 1},  # type: ignore[dict-item]
        )
    c = issuer.issue(method="tempo", intent="charge", request=REQUEST, now=NOW, opaque={"k": "v"})
    parsed = parse_challenge(c.to_header())
    assert parsed.opaque == {"k": "v"} and parsed.opaque_b64 == c.opaque_b64
    issuer.verify(parsed, method="tempo", intent="charge", request=REQUEST, now=NOW)


def test_core_19_opaque_changes_id_and_wire_strings_are_verbatim() -> None:
    """CORE-19: opaque is bound; re-serialized bytes break the binding, same bytes don't."""
    kw = {"realm": REALM, "method": "tempo", "intent": "charge", "request": REQUEST}
    without = challenge_id(SECRET, **kw)  # type: ignore[arg-type]
    with_opaque = challenge_id(SECRET, opaque={"a": "1", "b": "2"}, **kw)  # type: ignore[arg-type]
    assert without != with_opaque
    jcs_opaque = encode_json_b64({"a": "1", "b": "2"})
    assert with_opaque == challenge_id(SECRET, opaque=jcs_opaque, **kw)  # type: ignore[arg-type]
    reordered = b64url_encode(b'{"b":"2","a":"1"}')
    assert with_opaque != challenge_id(SECRET, opaque=reordered, **kw)  # type: ignore[arg-type]


def _issue(issuer: ChallengeIssuer, **kw: object) -> Challenge:
    return issuer.issue(method="tempo", intent="charge", request=REQUEST, now=NOW, **kw)  # type: ignore[arg-type]


def test_core_17_echo_verifies_and_tampering_fails() -> None:
    """CORE-17: the echo verifies; a changed amount → invalid-challenge."""
    issuer = ChallengeIssuer(SECRET, realm=REALM)
    c = parse_challenge(_issue(issuer).to_header())
    assert c.expires is not None
    issuer.verify(c, method="tempo", intent="charge", request=REQUEST, now=NOW)
    tampered = dataclasses.replace(
        c,
        request={**REQUEST, "amount": "1"},
        request_b64=encode_json_b64({**REQUEST, "amount": "1"}),
    )
    with pytest.raises(InvalidChallenge):
        issuer.check_binding(tampered, now=NOW)
    for field, value in [("id", c.id[:-1] + "A"), ("realm", "other"), ("intent", "session")]:
        with pytest.raises(InvalidChallenge):
            issuer.check_binding(dataclasses.replace(c, **{field: value}), now=NOW)


def test_core_15_description_not_bound() -> None:
    """CORE-15: tampering with description still verifies."""
    issuer = ChallengeIssuer(SECRET, realm=REALM)
    c = _issue(issuer, description="Pay 1 USD")
    issuer.verify(
        dataclasses.replace(c, description="Pay 0 USD"),
        method="tempo",
        intent="charge",
        request=REQUEST,
        now=NOW,
    )


def test_core_14_amb_06_expired_challenge_is_invalid_challenge() -> None:
    """CORE-14/AMB-06: expiry → invalid-challenge (not payment-expired); boundary is exclusive."""
    issuer = ChallengeIssuer(SECRET, realm=REALM, ttl=timedelta(seconds=60))
    c = _issue(issuer)
    issuer.check_binding(c, now=NOW + timedelta(seconds=59))
    with pytest.raises(InvalidChallenge) as info:
        issuer.check_binding(c, now=NOW + timedelta(seconds=60))
    assert info.value.problem == "invalid-challenge"
    no_expiry = dataclasses.replace(c, expires=None)
    with pytest.raises(InvalidChallenge, match="expires"):
        issuer.check_binding(no_expiry, now=NOW)


def test_core_20_route_check() -> None:
    """CORE-20: a valid challenge from /cheap presented at /expensive → invalid-challenge."""
    issuer = ChallengeIssuer(SECRET, realm=REALM)
    cheap = _issue(issuer)
    expensive = {**REQUEST, "amount": "5000000"}
    with pytest.raises(InvalidChallenge, match="route"):
        issuer.verify(cheap, method="tempo", intent="charge", request=expensive, now=NOW)
    with pytest.raises(InvalidChallenge, match="method or intent"):
        issuer.verify(cheap, method="tempo", intent="session", request=REQUEST, now=NOW)
    # Types matter: 1 == True in Python, not on the wire.
    c = issuer.issue(method="tempo", intent="charge", request={"n": 1}, now=NOW)
    with pytest.raises(InvalidChallenge):
        issuer.verify(c, method="tempo", intent="charge", request={"n": True}, now=NOW)


def test_core_20_same_request_different_key_order_matches() -> None:
    """CORE-20: the comparison is on canonical JSON, not on dict order."""
    issuer = ChallengeIssuer(SECRET, realm=REALM)
    c = _issue(issuer)
    issuer.verify(
        c, method="tempo", intent="charge", request=dict(reversed(REQUEST.items())), now=NOW
    )


def test_core_13_digest_checked_against_current_body() -> None:
    """CORE-13: a body that differs from the bound digest → verification-failed."""
    body = b'{"hello": "world"}'
    issuer = ChallengeIssuer(SECRET, realm=REALM)
    c = _issue(issuer, digest=content_digest(body))
    issuer.verify(c, method="tempo", intent="charge", request=REQUEST, now=NOW, body=body)
    with pytest.raises(VerificationFailed):
        issuer.verify(
            c, method="tempo", intent="charge", request=REQUEST, now=NOW, body=b'{"hello": "World"}'
        )


def test_core_21_rotation_keeps_old_challenges_until_expiry() -> None:
    """CORE-21: after rotation old-secret challenges verify until they expire, then never."""
    ttl = timedelta(minutes=5)
    old = ChallengeIssuer(SECRET, realm=REALM, ttl=ttl)
    issued = _issue(old)
    new = old.rotated("another-secret-that-is-at-least-32-bytes!", now=NOW + timedelta(minutes=1))
    new.check_binding(issued, now=NOW + timedelta(minutes=4))
    with pytest.raises(InvalidChallenge):
        new.check_binding(issued, now=NOW + ttl)
    fresh = new.issue(
        method="tempo", intent="charge", request=REQUEST, now=NOW + timedelta(minutes=2)
    )
    new.check_binding(fresh, now=NOW + timedelta(minutes=2))
    with pytest.raises(InvalidChallenge):
        old.check_binding(fresh, now=NOW + timedelta(minutes=2))


def test_core_21_old_secret_cannot_mint_after_retirement() -> None:
    """CORE-21: an old-secret id whose expiry is past retirement + ttl is refused."""
    ttl = timedelta(minutes=5)
    old = ChallengeIssuer(SECRET, realm=REALM, ttl=ttl)
    new = old.rotated("another-secret-that-is-at-least-32-bytes!", now=NOW)
    late = old.issue(
        method="tempo", intent="charge", request=REQUEST, now=NOW + timedelta(minutes=1)
    )
    with pytest.raises(InvalidChallenge):
        new.check_binding(late, now=NOW + timedelta(minutes=2))


def test_core_21_secret_not_in_repr() -> None:
    """CORE-21/43: the secret never shows in reprs."""
    issuer = ChallengeIssuer(SECRET, realm=REALM).rotated(
        "another-secret-that-is-at-least-32-bytes!", now=NOW
    )
    assert SECRET not in repr(issuer)
    assert "another-secret" not in repr(issuer)


def test_clock_injection() -> None:
    """Time comes only from now= or the clock callable."""
    issuer = ChallengeIssuer(SECRET, realm=REALM, clock=lambda: NOW)
    c = issuer.issue(method="tempo", intent="charge", request=REQUEST)
    assert c.expires == "2026-03-01T12:05:00.000Z"
    issuer.check_binding(c)
    with pytest.raises(ValueError, match="now"):
        ChallengeIssuer(SECRET, realm=REALM).issue(method="tempo", intent="charge", request={})
