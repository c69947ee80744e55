"""mpp.session.scheme: which paid requests only manage the channel (AMB-15), and where the final
receipt goes in an event stream (SES-32: before a trailing `data: [DONE]`)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpp.session.scheme import END_OF_STREAM, FinalReceiptSlot, is_management, is_ours


def test_is_ours_tempo_session_only() -> None:
    assert is_ours("tempo", "session")
    assert not is_ours("tempo", "charge")
    assert not is_ours("stripe", "session")


@pytest.mark.parametrize(
    ("http_method", "action", "has_body", "management"),
    [
        # HEAD never carries a request to serve.
        ("HEAD", "open", False, True),
        ("HEAD", "voucher", False, True),
        ("HEAD", "topUp", False, True),
        ("HEAD", "close", False, True),
        ("HEAD", "voucher", True, True),
        # topUp and close never pay for content, whatever the request.
        ("GET", "topUp", False, True),
        ("POST", "topUp", True, True),
        ("PUT", "close", True, True),
        ("POST", "close", False, True),
        # open / voucher: management only on a bodyless POST.
        ("POST", "open", False, True),
        ("POST", "voucher", False, True),
        ("POST", "open", True, False),
        ("POST", "voucher", True, False),
        ("GET", "voucher", False, False),
        ("GET", "open", False, False),
        ("PUT", "voucher", False, False),
        ("PATCH", "open", False, False),
        ("DELETE", "voucher", False, False),
        # An unknown action is the engine's to refuse; it is not management.
        ("POST", "refund", False, False),
    ],
)
def test_amb_15_is_management(
    http_method: str, action: str, has_body: bool, management: bool
) -> None:
    assert is_management(http_method, action, has_body) is management


def _run(chunks: list[bytes]) -> tuple[bytes, bytes]:
    """What the middleware sends: the chunks before the final receipt, and after it."""
    slot = FinalReceiptSlot()
    before = b"".join(slot.feed(c) for c in chunks[:-1])
    return before, slot.end(chunks[-1])


def test_ses_32_terminator_in_its_own_chunk_goes_after_the_receipt() -> None:
    before, after = _run([b"data: 1\n\n", END_OF_STREAM, b""])
    assert (before, after) == (b"data: 1\n\n", END_OF_STREAM)


def test_ses_32_terminator_at_the_end_of_a_content_chunk() -> None:
    before, after = _run([b"data: 1\n\n" + END_OF_STREAM, b""])
    assert (before, after) == (b"data: 1\n\n", END_OF_STREAM)


def test_ses_32_terminator_split_across_chunks() -> None:
    before, after = _run([b"data: 1\n\ndata: [DO", b"NE]\n", b"\n", b""])
    assert (before, after) == (b"data: 1\n\n", END_OF_STREAM)


def test_ses_32_done_that_was_not_the_last_event_is_sent_in_place() -> None:
    slot = FinalReceiptSlot()
    assert slot.feed(b"data: 1\n\n" + END_OF_STREAM) == b"data: 1\n\n"
    assert slot.feed(b"data: 2\n\n") == END_OF_STREAM + b"data: 2\n\n"
    assert slot.end(b"") == b""


def test_ses_32_empty_chunk_does_not_release_a_held_terminator() -> None:
    before, after = _run([b"data: 1\n\n", END_OF_STREAM, b"", b""])
    assert (before, after) == (b"data: 1\n\n", END_OF_STREAM)


def test_ses_32_stream_without_terminator_is_passed_through() -> None:
    before, after = _run([b"data: 1\n\n", b"data: 2\n\n", b""])
    assert (before, after) == (b"data: 1\n\ndata: 2\n\n", b"")


def test_ses_32_last_chunk_goes_after_the_receipt() -> None:
    """A handler that sends its last chunk with the end of the body: all of it follows the
    receipt (the middleware cannot split a chunk it was not asked to hold)."""
    before, after = _run([b"data: 1\n\n", b"data: 2\n\n" + END_OF_STREAM])
    assert (before, after) == (b"data: 1\n\n", b"data: 2\n\n" + END_OF_STREAM)


_EVENT = st.binary(max_size=12).map(lambda b: b"data: " + b.hex().encode() + b"\n\n")


@st.composite
def _streams(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    events = draw(st.lists(st.one_of(_EVENT, st.just(END_OF_STREAM)), max_size=6))
    if draw(st.booleans()):
        events.append(END_OF_STREAM)
    stream = b"".join(events)
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    if draw(st.booleans()):
        chunks.append(b"")  # Starlette ends a streamed body with an empty last chunk
    return stream, chunks


@given(_streams())
def test_ses_32_any_chunking_keeps_the_bytes_and_puts_the_receipt_before_done(
    case: tuple[bytes, list[bytes]],
) -> None:
    stream, chunks = case
    before, after = _run(chunks)  # on the wire: before + the final receipt + after
    assert before + after == stream  # nothing lost, nothing reordered
    held = after[: len(after) - len(chunks[-1])]
    assert END_OF_STREAM.startswith(held)  # only a (beginning of a) terminator waits
    if stream.endswith(END_OF_STREAM):
        assert len(before) <= len(stream) - len(END_OF_STREAM)  # the receipt precedes [DONE]
