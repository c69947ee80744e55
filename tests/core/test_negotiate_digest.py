"""Accept-Payment (CORE-36..38) and Content-Digest (CORE-13)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from mpp.core import (
    AcceptPaymentParseError,
    AcceptRange,
    Challenge,
    check_content_digest,
    content_digest,
    parse_accept_payment,
    parse_content_digest,
    rank_challenges,
)


def _offer(method: str, intent: str) -> Challenge:
    return Challenge(id=f"{method}-{intent}", realm="r", method=method, intent=intent)


OFFERS = [_offer("tempo", "session"), _offer("tempo", "charge"), _offer("stripe", "charge")]


def test_core_36_parse_ranges() -> None:
    """CORE-36: three ranges; no q means 1; weights in thousandths."""
    assert parse_accept_payment("tempo/*, solana/*;q=0.6, */session;q=0.3") == [
        AcceptRange("tempo", "*", 1000),
        AcceptRange("solana", "*", 600),
        AcceptRange("*", "session", 300),
    ]
    assert parse_accept_payment("tempo/charge ; Q=0.125 ; currency=usd")[0].q == 125


@pytest.mark.parametrize(
    "value", ["tempo/charge;q=2", "tempo", "tempo/charge;q=0.0001", "tempo/charge;q", "", "???"]
)
def test_core_36_malformed(value: str) -> None:
    """CORE-36: `q=2` and other malformed ranges → error."""
    with pytest.raises(AcceptPaymentParseError):
        parse_accept_payment(value)


def test_core_37_filter_sort_specificity() -> None:
    """CORE-37: q=0 excluded; most specific range decides; server order kept on ties."""
    ranked = rank_challenges(OFFERS, "tempo/*;q=0.5, tempo/session;q=0")
    assert [c.id for c in ranked] == ["tempo-charge"]
    ranked = rank_challenges(OFFERS, "*/*;q=0.1, stripe/charge")
    assert [c.id for c in ranked] == ["stripe-charge", "tempo-session", "tempo-charge"]
    ranked = rank_challenges(OFFERS, "*/charge;q=0.5, tempo/*;q=0.4")
    assert [c.id for c in ranked] == ["stripe-charge", "tempo-session", "tempo-charge"]


def test_core_38_absent_malformed_or_unmatched() -> None:
    """CORE-38: absent → all; malformed → ignored; no match → the normal set."""
    assert rank_challenges(OFFERS, None) == OFFERS
    assert rank_challenges(OFFERS, "???") == OFFERS
    assert rank_challenges(OFFERS, "solana/*") == OFFERS


def test_core_13_content_digest_vector() -> None:
    """CORE-13: the spec vector for {"hello": "world"}."""
    body = b'{"hello": "world"}'
    assert content_digest(body) == "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
    assert check_content_digest(content_digest(body), body)
    assert not check_content_digest(content_digest(body), body.replace(b"w", b"W"))


def test_core_13_peer_forms_and_dictionaries() -> None:
    """CORE-13: `sha-256=<base64>` (peer form), sha-512, several members, junk."""
    body = b"abc"
    bare = "sha-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()
    assert check_content_digest(bare, body)
    both = content_digest(body) + ", " + content_digest(body, "sha-512")
    assert check_content_digest(both, body)
    assert set(parse_content_digest(both)) == {"sha-256", "sha-512"}
    assert check_content_digest("md5=:xx:, " + content_digest(body), body)
    for junk in ["", "md5=:abc:", "sha-256=:!!:", "sha-256", "x" * 5000]:
        assert not check_content_digest(junk, body)
