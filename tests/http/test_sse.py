"""The SSE payment-event filter and formatter, without a network (SES-31/32)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from mpp.http.sse import NEED_VOUCHER, RECEIPT, PaymentEventFilter, format_event

DATA = b'data: {"i": 1}\n\n'
NEED = format_event(NEED_VOUCHER, {"channelId": "0xab", "requiredCumulative": "20"})
FINAL = format_event(RECEIPT, {"spent": "20"})
OTHER = b"event: ping\ndata: payment-receipt lookalike\n\n"
BODY = DATA + NEED + DATA + OTHER + b"data: [DONE]\n\n" + FINAL
CLEAN = DATA + DATA + OTHER + b"data: [DONE]\n\n"


def run(chunks: list[bytes]) -> tuple[bytes, list[str]]:
    f = PaymentEventFilter()
    out, names = b"", []
    for c in chunks:
        clean, events = f.feed(c)
        out += clean
        names += [e.event for e in events]
    clean, events = f.flush()
    return out + clean, names + [e.event for e in events]


def test_ses_31_32_filter_removes_payment_events_byte_exact() -> None:
    out, names = run([BODY])
    assert out == CLEAN and names == [NEED_VOUCHER, RECEIPT]


@given(st.lists(st.integers(min_value=0, max_value=len(BODY)), max_size=8))
def test_ses_31_filter_any_chunking(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [BODY[a:b] for a, b in zip([0, *points], [*points, len(BODY)], strict=True)]
    assert run(chunks) == (CLEAN, [NEED_VOUCHER, RECEIPT])


def test_ses_31_format_need_voucher_all_strings() -> None:
    text = NEED.decode()
    assert text.startswith("event: payment-need-voucher\ndata: ") and text.endswith("\n\n")
    data = json.loads(text.split("data: ", 1)[1])
    assert all(isinstance(v, str) for v in data.values())


def test_filter_crlf_and_unterminated_tail() -> None:
    body = b"data: a\r\n\r\nevent: payment-receipt\r\ndata: {}\r\n\r\ndata: tail"
    assert run([body]) == (b"data: a\r\n\r\ndata: tail", [RECEIPT])
