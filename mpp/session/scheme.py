"""The session intent's decisions that every adapter shares (pure: no I/O).

Which challenges are ours, which paid requests only manage the channel, and where the final
receipt goes in an event stream: the HTTP server, the HTTP client, the inference server and the
CLI ask here instead of deciding again.
"""

from __future__ import annotations

__all__ = ["END_OF_STREAM", "INTENT", "METHOD", "FinalReceiptSlot", "is_management", "is_ours"]

METHOD, INTENT = "tempo", "session"

# An OpenAI-style stream's terminator; clients (the openai SDK) stop reading at it.
END_OF_STREAM = b"data: [DONE]\n\n"


def is_ours(method: str, intent: str) -> bool:
    """A challenge (or credential) of the tempo session intent."""
    return (method, intent) == (METHOD, INTENT)


def is_management(http_method: str, action: str, has_body: bool) -> bool:
    """AMB-15, decided here: the credential manages the channel and nothing is served. HEAD
    always; `topUp` and `close` always; `open` and `voucher` on a bodyless POST (it carries no
    request to serve). The answer is 200 with a receipt and an empty body."""
    if http_method == "HEAD" or action in ("topUp", "close"):
        return True
    return http_method == "POST" and not has_body and action in ("open", "voucher")


class FinalReceiptSlot:
    """SES-32: the final `payment-receipt` event goes before a trailing `data: [DONE]`, or a
    client that stops reading there never sees it. Feed the event stream's chunks: what ends
    with the terminator, or with a beginning of it (a terminator split across chunks), is kept
    back until a chunk with more bytes shows it was not the end."""

    def __init__(self) -> None:
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        """A chunk that is not the last one: what to send now."""
        out = self._held + chunk if self._held else chunk
        keep = _terminator_start(out)
        self._held = out[keep:]
        return out[:keep]

    def end(self, chunk: bytes) -> bytes:
        """The last chunk: what to send after the final receipt."""
        out, self._held = self._held + chunk, b""
        return out


def _terminator_start(data: bytes) -> int:
    """Where the longest tail of `data` that begins END_OF_STREAM starts (len(data): none).
    The terminator has one lowercase "d", its first byte: only the last "d" in reach can start
    such a tail (one search per chunk: this runs for every unit a stream sends)."""
    start = data.rfind(b"d", max(0, len(data) - len(END_OF_STREAM)))
    if start != -1 and END_OF_STREAM.startswith(data[start:]):
        return start
    return len(data)
