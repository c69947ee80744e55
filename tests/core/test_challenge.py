"""Challenge grammar and codec: CORE-01..11, 14..16, 40 (challenge side)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mpp.core import (
    Challenge,
    ChallengeParseError,
    FormatError,
    encode_json_b64,
    parse_challenge,
    parse_challenges,
)
from tests.core.helpers import NOW, header


def test_core_01_scheme_and_param_names_case_insensitive() -> None:
    """CORE-01: `payment` scheme and `ID=` parse; names are lowercased."""
    c = parse_challenge('payment ID="a", Realm="r", METHOD="tempo", intent="charge", request="e30"')
    assert (c.id, c.realm, c.method, c.intent, c.request) == ("a", "r", "tempo", "charge", {})


def test_core_02_token_or_quoted_values() -> None:
    """CORE-02: `request=e30` is the same as `request="e30"`."""
    a = parse_challenge("Payment id=a, realm=r, method=tempo, intent=charge, request=e30")
    b = parse_challenge(header())
    assert a == b


def test_core_03_quoted_pairs_round_trip() -> None:
    """CORE-03: escaped quotes and backslashes unescape and round-trip."""
    c = parse_challenge(header() + r', description="Pay \"premium\" API"')
    assert c.description == 'Pay "premium" API'
    assert parse_challenge(c.to_header()) == c
    d = parse_challenge(header() + r', description="Path C:\\tempo"')
    assert d.description == "Path C:\\tempo"
    assert parse_challenge(d.to_header()).description == "Path C:\\tempo"


@pytest.mark.parametrize("bad", ["a\r\nSet-Cookie: x=1", "a\nb", "a\rb", "nul\x00"])
def test_core_03_formatter_refuses_cr_lf(bad: str) -> None:
    """CORE-03: CR/LF (header injection) and other controls are refused by the formatter."""
    c = Challenge(id="a", realm="r", method="tempo", intent="charge", description=bad)
    with pytest.raises(FormatError):
        c.to_header()


def test_core_03_non_ascii_is_escaped_and_read_back() -> None:
    """CORE-03: non-ASCII description stays ASCII on the wire (peer \\uXXXX form)."""
    c = Challenge(id="a", realm="r", method="tempo", intent="charge", description="café ☕ 🚀")
    wire = c.to_header()
    assert wire.isascii()
    assert parse_challenge(wire).description == "café ☕ 🚀"


def test_core_04_multiple_challenges_mixed_schemes() -> None:
    """CORE-04: Bearer + two Payment challenges in one value; other schemes skipped."""
    value = 'Bearer realm="x", ' + header(id="a") + ", " + header(id="b")
    assert [c.id for c in parse_challenges(value)] == ["a", "b"]


def test_core_04_quoted_commas_and_scheme_word_are_not_boundaries() -> None:
    """CORE-04: `realm="contact Payment support"` and quoted commas → one challenge."""
    value = header(realm="contact Payment, support", description="a, Payment id=x, b")
    found = parse_challenges(value)
    assert len(found) == 1
    assert found[0].realm == "contact Payment, support"


def test_core_04_several_header_lines_and_token68() -> None:
    """CORE-04: challenges across lines; token68 schemes skipped."""
    lines = ["Basic abc==", header(id="a"), "Negotiate YII=, " + header(id="b")]
    assert [c.id for c in parse_challenges(lines)] == ["a", "b"]


def test_core_05_ows_bws_and_param_order() -> None:
    """CORE-05: OWS around commas, BWS around `=`, params in any order."""
    a = parse_challenge(
        'Payment  id = "x" ,  realm="r" ,method= tempo,\tintent ="charge" , request=e30'
    )
    b = parse_challenge('Payment request=e30, intent=charge, method=tempo, realm=r, id="x"')
    assert a == b


def test_core_06_duplicate_param_rejected() -> None:
    """CORE-06: a parameter name occurs once per challenge (case-insensitively)."""
    with pytest.raises(ChallengeParseError, match="duplicate parameter id"):
        parse_challenge(header() + ', ID="b"')


@pytest.mark.parametrize("missing", ["id", "realm", "method", "intent", "request"])
def test_core_07_required_params(missing: str) -> None:
    """CORE-07: dropping any required param → error naming it."""
    params = {"id": "a", "realm": "r", "method": "tempo", "intent": "charge", "request": "e30"}
    del params[missing]
    value = "Payment " + ", ".join(f"{k}={v}" for k, v in params.items())
    with pytest.raises(ChallengeParseError, match=missing):
        parse_challenge(value)


@pytest.mark.parametrize("value", [header(id=""), "Payment", "", "   ", "Bearer x=1"])
def test_core_07_empty_id_bare_scheme_empty_header(value: str) -> None:
    """CORE-07: `id=""`, `Payment` alone, empty header, no Payment challenge → error."""
    with pytest.raises(ChallengeParseError):
        parse_challenge(value)


def test_core_07_non_strict_skips_broken_payment_challenges() -> None:
    """CORE-07: with strict=False a broken challenge is skipped, good ones kept."""
    value = header(id="") + ", " + header(id="ok")
    assert [c.id for c in parse_challenges(value, strict=False)] == ["ok"]
    with pytest.raises(ChallengeParseError):
        parse_challenges(value)


def test_core_08_formatter_refuses_empty_id() -> None:
    """CORE-08: servers never emit a challenge without id."""
    with pytest.raises(FormatError, match="id"):
        Challenge(id="", realm="r", method="tempo", intent="charge").to_header()


@pytest.mark.parametrize("method", ["Tempo", "tempo2", "te-mpo", ""])
def test_core_09_method_grammar(method: str) -> None:
    """CORE-09: method = 1*LOWERALPHA, case-sensitive."""
    with pytest.raises(ChallengeParseError, match="method"):
        parse_challenge(header(method=method))
    with pytest.raises(FormatError):
        Challenge(id="a", realm="r", method=method, intent="charge").to_header()


def test_core_09_intent_grammar() -> None:
    """CORE-09: intent = 1*(ALPHA / DIGIT / "-")."""
    assert parse_challenge(header(intent="charge-v2")).intent == "charge-v2"
    with pytest.raises(ChallengeParseError, match="intent"):
        parse_challenge(header(intent="charge_v2"))


def test_core_10_unknown_params_ignored() -> None:
    """CORE-10: `foo="bar"` is ignored."""
    assert parse_challenge(header() + ', foo="bar", x-y=z') == parse_challenge(header())


def test_core_11_request_is_jcs_base64url() -> None:
    """CORE-11: sorted keys, no spaces, no HTML escaping, no padding."""
    assert encode_json_b64({"b": 1, "a": "<&>"}) == "eyJhIjoiPCY-IiwiYiI6MX0"
    c = Challenge(id="a", realm="r", method="tempo", intent="charge", request={"b": 1, "a": "<&>"})
    assert c.request_b64 == "eyJhIjoiPCY-IiwiYiI6MX0"
    assert 'request="eyJhIjoiPCY-IiwiYiI6MX0"' in c.to_header()


@pytest.mark.parametrize(
    ("request_b64", "problem"),
    [
        ("not-valid!!!", "base64url"),
        ("bm90IGpzb24", "not JSON"),
        ("WzFd", "not a JSON object"),  # [1]
        ("_w", "not UTF-8"),
        ("TmFO", "not JSON"),  # NaN
    ],
)
def test_core_11_request_must_be_base64url_json_object(request_b64: str, problem: str) -> None:
    """CORE-11: invalid base64url or non-JSON request → error naming the problem."""
    with pytest.raises(ChallengeParseError, match=problem):
        parse_challenge(header(request=request_b64))


def test_core_11_request_kept_verbatim() -> None:
    """CORE-11/19: a non-JCS request on the wire is kept byte for byte."""
    wire = encode_json_b64({"a": 1})  # JCS form
    non_jcs = "eyAiYSI6IDEgfQ"  # '{ "a": 1 }'
    c = parse_challenge(header(request=non_jcs))
    assert c.request == {"a": 1} and c.request_b64 == non_jcs != wire
    assert f'request="{non_jcs}"' in c.to_header()


def test_core_14_expires_formats_and_is_expired() -> None:
    """CORE-14 (and the validity-window part of CORE-39): Z, offsets, fractions; injected now."""
    for stamp in ["2026-03-01T12:00:01Z", "2026-03-01T13:00:01+01:00", "2026-03-01T12:00:00.5Z"]:
        c = parse_challenge(header(expires=stamp))
        assert not c.is_expired(NOW)
        assert c.is_expired(NOW + timedelta(seconds=2))
    past = parse_challenge(header(expires="2026-03-01T11:59:59.000Z"))
    assert past.is_expired(NOW)
    assert not parse_challenge(header()).is_expired(NOW)


@pytest.mark.parametrize(
    "bad", ["tomorrow", "2026-03-01", "2026-03-01T12:00:00", "2026-13-01T00:00:00Z"]
)
def test_core_14_malformed_expires_rejected(bad: str) -> None:
    """CORE-14: expires must be RFC 3339."""
    with pytest.raises(ChallengeParseError, match="expires"):
        parse_challenge(header(expires=bad))


def test_core_14_is_expired_needs_aware_now() -> None:
    """CORE-14: a naive now is refused (no implicit clock)."""
    c = parse_challenge(header(expires="2026-03-01T12:00:01Z"))
    with pytest.raises(ValueError):
        c.is_expired(NOW.replace(tzinfo=None))


def test_core_15_description_is_display_only() -> None:
    """CORE-15: description parses and formats but never enters the binding (see test_binding)."""
    c = parse_challenge(header(description="Pay 1 USD"))
    assert c.description == "Pay 1 USD"


def test_core_16_realm_required_when_formatting() -> None:
    """CORE-16: a challenge built without a realm → error."""
    with pytest.raises(FormatError, match="realm"):
        Challenge(id="a", realm="", method="tempo", intent="charge").to_header()


def test_core_40_challenge_of_4kb_parses() -> None:
    """CORE-40: clients handle challenges of at least 4 KB."""
    big = Challenge(
        id="a", realm="r", method="tempo", intent="charge", request={"memo": "x" * 4200}
    )
    wire = big.to_header()
    assert len(wire) >= 4096
    assert parse_challenge(wire) == big


def test_core_40_oversized_challenge_refused_before_scanning() -> None:
    """CORE-40: a value above 64 KiB is refused."""
    with pytest.raises(ChallengeParseError, match="longer"):
        parse_challenges(header(description="x" * 70_000))


@pytest.mark.parametrize(
    "value",
    [
        'Payment id="a, realm=r',  # unterminated quote
        "Payment id=, realm=r",
        'Payment id="a" realm="r"',  # missing comma
        "Payment =x",
        'Payment id="a", realm="r", method="tempo", intent="charge", request=e30 junk',
    ],
)
def test_core_01_syntax_errors_are_typed(value: str) -> None:
    """CORE-01: broken syntax inside a Payment challenge → ChallengeParseError."""
    with pytest.raises(ChallengeParseError):
        parse_challenge(value)


def test_core_04_broken_other_scheme_does_not_hide_payment() -> None:
    """CORE-04: a malformed non-Payment challenge is skipped after resynchronising."""
    value = 'Bearer error="unterminated, ' + header(id="a")
    assert parse_challenges(value) == []  # the quote swallows the rest: nothing to find
    value = "Bearer a b c, " + header(id="a")
    assert [c.id for c in parse_challenges(value)] == ["a"]
