"""A loopback TCP proxy that adds a fixed round-trip time: a WAN link for tests and benchmarks.

Every chunk read from one side is written to the other `rtt / 2` seconds later, in order
(a reader and a writer thread per direction, a deadline queue between them), so a request and
its answer take one RTT more than on loopback while bandwidth stays loopback's. Used as a
context manager; `close()` stops the listener and every connection.
"""

from __future__ import annotations

import queue
import socket
import threading
import time

from tests.http.support import free_port


class DelayProxy:
    def __init__(self, target_port: int, rtt: float) -> None:
        self.target_port = target_port
        self.one_way = rtt / 2
        self.port = free_port()
        self._stop = threading.Event()
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.1)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> DelayProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._server.close()
        with self._lock:
            for sock in self._socks:
                _close(sock)
            self._socks.clear()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                _close(client)
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(None)
            with self._lock:
                self._socks += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                lane: queue.Queue[tuple[float, bytes]] = queue.Queue()
                threading.Thread(target=self._read, args=(src, lane), daemon=True).start()
                threading.Thread(target=self._write, args=(dst, lane), daemon=True).start()

    def _read(self, src: socket.socket, lane: queue.Queue[tuple[float, bytes]]) -> None:
        try:
            while True:
                data = src.recv(65536)
                lane.put((time.monotonic() + self.one_way, data))
                if not data:
                    return
        except OSError:
            lane.put((0.0, b""))

    def _write(self, dst: socket.socket, lane: queue.Queue[tuple[float, bytes]]) -> None:
        try:
            while True:
                due, data = lane.get()
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
        except OSError:
            pass


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
