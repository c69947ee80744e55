"""One ASCII-only amount reader (mpp.core.amounts) behind every amount the toolkit reads.

SES-05/SES-24: amounts are decimal strings of base units in uint128. `str.isdigit` accepts
superscripts, Arabic-Indic and fullwidth digits; `int()` then raises a bare ValueError ("²") or
silently reads another script's number ("٣"). Each reader must refuse them with its documented
answer: None for the client's tolerant readers, a typed error where a value is required.
"""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpp.cli._common import CliError, amount_arg
from mpp.core.amounts import MAX_AMOUNT, decimal_amount, decimal_seconds
from mpp.http.client.exchange import retry_after, superseded
from mpp.session.terms import TermsError, parse_amount

HOSTILE = [
    "²",
    "٣",
    "３０",
    "1²",
    "１.５usd",
    "+1",
    "-1",
    " 1",
    "1 ",
    "1\n",
    "01",
    "1e3",
    "1.0",
    "",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_ses_24_non_ascii_or_non_canonical_amounts_are_refused(text: str) -> None:
    assert decimal_amount(text) is None
    with pytest.raises(TermsError):
        parse_amount(text, "amount")


def test_ses_24_uint128_bounds() -> None:
    assert decimal_amount("0") == 0
    assert decimal_amount(str(MAX_AMOUNT)) == MAX_AMOUNT
    assert decimal_amount(str(MAX_AMOUNT + 1)) is None
    assert decimal_amount(10) is None  # a JSON number is not a wire amount


@given(st.integers(min_value=0, max_value=MAX_AMOUNT))
def test_ses_24_roundtrip(n: int) -> None:
    assert decimal_amount(str(n)) == n


@given(st.text(max_size=8))
def test_ses_24_any_text_is_none_or_its_ascii_integer(text: str) -> None:
    got = decimal_amount(text)
    assert got is None or (text.isascii() and str(got) == text)


def _problem(status: int, body: dict[str, object], **headers: str) -> httpx.Response:
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]  # UTF-8 bytes, as sent
    return httpx.Response(status, content=json.dumps(body).encode(), headers=raw)


def test_ses_24_client_problem_fields_with_unicode_digits_read_as_absent() -> None:
    payload = {"action": "voucher", "cumulativeAmount": "10"}
    assert superseded(payload, _problem(402, {"acceptedCumulative": "20"}))
    assert not superseded(payload, _problem(402, {"acceptedCumulative": "²"}))
    assert not superseded({**payload, "cumulativeAmount": "１０"}, _problem(402, {}))


def test_core_31_retry_after_with_unicode_digits_falls_back() -> None:
    assert retry_after(_problem(503, {}, **{"retry-after": "3"})) == 3.0
    assert retry_after(_problem(503, {}, **{"retry-after": "²"})) == 1.0
    assert retry_after(_problem(503, {}, **{"retry-after": "３"})) == 1.0
    assert retry_after(_problem(503, {}, **{"retry-after": "99999999999"})) == 1.0
    assert decimal_seconds("٣") is None


@pytest.mark.parametrize("text", ["²", "１５００", "１.５usd", "٣usd"])
def test_cli_amounts_with_unicode_digits_are_a_usage_error(text: str) -> None:
    with pytest.raises(CliError):
        amount_arg(text, "--deposit")
    assert amount_arg("1.5usd", "--deposit") == 1_500_000
