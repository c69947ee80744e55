"""Server-Sent Events: the two payment events (SES-31/32), formatted and filtered incrementally.

Shared by the server (which formats `payment-need-voucher` / `payment-receipt`) and the client
(which removes them from the body before the caller sees it, byte-exact for everything else).
The filter is a small sans-I/O state machine: bytes in, (clean bytes, payment events) out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

NEED_VOUCHER: Final = "payment-need-voucher"
RECEIPT: Final = "payment-receipt"
PAYMENT_EVENTS: Final = frozenset({NEED_VOUCHER, RECEIPT})
SSE_CONTENT_TYPE: Final = "text/event-stream"
# A payment event is small; a pending event above this is not ours and is passed on unparsed.
MAX_PAYMENT_EVENT: Final = 64 * 1024
_MARKER: Final = b"payment-"


def format_event(event: str, data: Any) -> bytes:
    """One SSE event; `data` is JSON-encoded unless already a string (no newlines inside)."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    lines = "".join(f"data: {line}\n" for line in text.split("\n"))
    return f"event: {event}\n{lines}\n".encode()


def is_event_stream(content_type: str | None) -> bool:
    return bool(content_type) and str(content_type).split(";", 1)[0].strip().lower() == (
        SSE_CONTENT_TYPE
    )


@dataclass(frozen=True, slots=True)
class PaymentEvent:
    """A `payment-*` event taken out of a stream; `data` is its parsed JSON object."""

    event: str
    data: dict[str, Any]


def _boundary(buf: bytes, start: int) -> tuple[int, int]:
    """(end of the event, start of the next) for the first blank line at or after `start`."""
    best = (-1, -1)
    for sep in (b"\n\n", b"\r\n\r\n", b"\r\r"):
        i = buf.find(sep, start)
        if i != -1 and (best[0] == -1 or i < best[0]):
            best = (i, i + len(sep))
    return best


def _event_name(block: bytes) -> str | None:
    """The `event:` field of one event block (the last one wins, like the SSE spec)."""
    name: str | None = None
    for raw in block.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"):
        if raw.startswith(b"event:"):
            name = raw[6:].decode("utf-8", "replace").removeprefix(" ")
    return name


def _event_data(block: bytes) -> str:
    parts = []
    for raw in block.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"):
        if raw.startswith(b"data:"):
            parts.append(raw[5:].decode("utf-8", "replace").removeprefix(" "))
    return "\n".join(parts)


def parse_payment_event(block: bytes) -> PaymentEvent | None:
    """A payment event from one event block, None when it is any other event.

    A payment event with unparseable data is still a payment event (so it is still removed),
    with empty `data`.
    """
    name = _event_name(block)
    if name not in PAYMENT_EVENTS:
        return None
    try:
        data = json.loads(_event_data(block))
    except (ValueError, RecursionError):
        data = {}
    return PaymentEvent(name, data if isinstance(data, dict) else {})


class PaymentEventFilter:
    """Feed body chunks; get the body without payment events, and the events themselves.

    Events that are not payment events pass through byte for byte. Only the tail after the
    last complete event is held back while it could still turn out to be a payment event.
    """

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> tuple[bytes, list[PaymentEvent]]:
        buf = self._buf + chunk if self._buf else chunk
        if _MARKER not in buf:
            # Fast path: nothing here can be (the start of) a payment event unless it is split
            # across chunks right inside "payment-"; hold back only the incomplete last event.
            cut = _last_boundary(buf)
            self._buf = buf[cut:]
            return buf[:cut], []
        out: list[bytes] = []
        events: list[PaymentEvent] = []
        pos = 0
        while True:
            end, nxt = _boundary(buf, pos)
            if end == -1:
                break
            block = buf[pos:end]
            found = parse_payment_event(block) if _MARKER in block else None
            if found is None:
                out.append(buf[pos:nxt])
            else:
                events.append(found)
            pos = nxt
        rest = buf[pos:]
        if len(rest) > MAX_PAYMENT_EVENT:
            out.append(rest)  # not a payment event we could ever parse: do not hold it forever
            rest = b""
        self._buf = rest
        return b"".join(out), events

    def flush(self) -> tuple[bytes, list[PaymentEvent]]:
        """End of the body: a trailing unterminated event is delivered (or removed) as is."""
        rest, self._buf = self._buf, b""
        if not rest:
            return b"", []
        found = parse_payment_event(rest) if _MARKER in rest else None
        return (b"", [found]) if found is not None else (rest, [])


def _last_boundary(buf: bytes) -> int:
    """Index just after the last blank line in `buf` (0 when there is none)."""
    best = 0
    for sep in (b"\n\n", b"\r\n\r\n", b"\r\r"):
        i = buf.rfind(sep)
        if i != -1:
            best = max(best, i + len(sep))
    return best
