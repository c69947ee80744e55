"""uvicorn without half-sent requests held open forever: header and body read timeouts.

uvicorn's h11 protocol bounds only the idle time between requests (`timeout_keep_alive`); a
client that sends half a request line, or headers and then a body one byte a minute, holds
its connection (and, for a paid route, the middleware's body read) for as long as it likes.
`GuardedH11Protocol` adds two deadlines:

- **headers**: a request's head must arrive within `HEADER_TIMEOUT` seconds of its first byte
  (or of the connection, for the first request);
- **body**: while the body is being read, at most `BODY_IDLE_TIMEOUT` seconds may pass without
  a byte of it.

Past either, the client gets `408 Request Timeout` (when no response has started) and the
connection is closed; an app waiting for the body sees `http.disconnect`.

`server_config()` is the one uvicorn configuration `mpp serve` and `python -m
mpp.inference.serve` use; other apps pass `http=GuardedH11Protocol` to uvicorn themselves.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["BODY_IDLE_TIMEOUT", "HEADER_TIMEOUT", "GuardedH11Protocol", "server_config"]

HEADER_TIMEOUT = 10.0
BODY_IDLE_TIMEOUT = 15.0
_TIMEOUT_BODY = (
    b'{"type":"about:blank","title":"Request Timeout","status":408,"detail":"request too slow"}'
)
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/problem+json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


class GuardedH11Protocol(H11Protocol):
    header_timeout = HEADER_TIMEOUT
    body_idle_timeout = BODY_IDLE_TIMEOUT

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._read_deadline: asyncio.TimerHandle | None = None
        self._partial_head = False  # bytes of a request head arrived, not the whole head

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout)

    def _between_requests(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def data_received(self, data: bytes) -> None:
        if self._between_requests():  # a request head begins (or goes on)
            self._partial_head = True
            if self._read_deadline is None:
                self._arm(self.header_timeout)
        super().data_received(data)
        if self._between_requests():
            return  # the head is not complete yet: its deadline stands
        self._partial_head = False
        if self.conn.their_state is h11.SEND_BODY:
            self._arm(self.body_idle_timeout)  # each body chunk restarts the idle clock
        else:
            self._disarm()  # the whole request is in

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        self._disarm()  # uvicorn's keep-alive timer takes over between requests
        super().on_response_complete()
        if self._between_requests() and self.conn.trailing_data[0]:
            # Part of the next (pipelined) head is already here: its deadline, not keep-alive.
            self._unset_keepalive_if_required()
            self._partial_head = True
            self._arm(self.header_timeout)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._read_deadline = self.loop.call_later(seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _too_slow(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        reading_body = not self._between_requests()
        assert self.cycle is not None or not reading_body
        started = reading_body and self.cycle is not None and self.cycle.response_started
        if (reading_body or self._partial_head) and not started:
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()  # the app waiting for the body gets http.disconnect


def server_config(app: Any, host: str, port: int, **kw: Any) -> uvicorn.Config:
    """The uvicorn configuration of our servers: guarded reads, warnings only, lifespan on."""
    kw.setdefault("log_level", "warning")
    kw.setdefault("lifespan", "on")
    return uvicorn.Config(app, host=host, port=port, http=GuardedH11Protocol, **kw)
