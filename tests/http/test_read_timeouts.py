"""Header and body read timeouts (mpp.http.server.uvicorn_guard), on the uvicorn configuration that
`mpp serve` runs: a half-sent request gets 408 and its connection closes; it never reaches the
app, and a body cut short is never acted on. Raw sockets against a real uvicorn."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from mpp.http.server.uvicorn_guard import GuardedH11Protocol, server_config
from tests.http.support import Counters, Env, free_port, plain_app

TIMEOUT = 0.5


@pytest.fixture
def guarded(env: Env, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, Counters]]:
    monkeypatch.setattr(GuardedH11Protocol, "header_timeout", TIMEOUT)
    monkeypatch.setattr(GuardedH11Protocol, "body_idle_timeout", TIMEOUT)
    counters = Counters()
    port = free_port()
    config = server_config(plain_app(env.gate(), counters), "127.0.0.1", port, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield port, counters
    finally:
        server.should_exit = True
        thread.join(10)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.settimeout(10)  # a broken guard fails the test instead of hanging it
    return sock


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_connection_that_sends_nothing_is_closed(guarded: tuple[int, Counters]) -> None:
    with _connect(guarded[0]) as sock:
        assert _read_all(sock) == b""  # closed by the server, no answer to no request


def test_half_a_request_head_gets_408(guarded: tuple[int, Counters]) -> None:
    port, counters = guarded
    with _connect(port) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Ty")
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'"status":408' in answer
    assert counters.calls == {}


def test_a_stalled_body_gets_408_and_is_never_acted_on(guarded: tuple[int, Counters]) -> None:
    port, counters = guarded
    with _connect(port) as sock:
        head = b"POST /fixed HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
        sock.sendall(head + b'{"partial":')
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert counters.calls == {}


def test_a_slow_but_steady_body_is_read_whole(guarded: tuple[int, Counters]) -> None:
    """The body clock is an idle clock: a body that keeps coming is never cut off."""
    port, _ = guarded
    body = b"x" * 12
    with _connect(port) as sock:
        sock.sendall(b"POST /fixed HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n")
        for i in range(0, len(body), 2):  # 0.6 s in all (> TIMEOUT), never TIMEOUT without a byte
            time.sleep(TIMEOUT / 5)
            sock.sendall(body[i : i + 2])
        sock.shutdown(socket.SHUT_WR)
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 402 ")  # read whole, then asked to pay


def test_keep_alive_next_request_head_is_bounded_too(guarded: tuple[int, Counters]) -> None:
    port, _ = guarded
    with _connect(port) as sock:
        # One whole request, then the head of the next stalls (on the same connection).
        sock.sendall(b"GET /free HTTP/1.1\r\nHost: x\r\n\r\nGET /free HTTP/1.1\r\nHo")
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.count(b"HTTP/1.1 ") == 2 and b"HTTP/1.1 408 " in answer
