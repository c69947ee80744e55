"""The chain watcher: the payee's eyes on the escrow, so no payer takes back what it was served.

`ChainWatcher(server)` follows the escrow's events (ESC-04) for the channels in the server's
store, from a block cursor kept in the same store, and runs the settlement policy:

- `CloseRequested` (a payer starting a forced close, SES-38): the channel stops serving at once,
  even from reservations already made (SES-21, mpp.session.holds), and is closed cooperatively:
  the payee captures exactly what was delivered and the payer gets the rest back immediately,
  long before the 15-minute grace period ends.
- `TopUp`: the deposit is refreshed, so a voucher above the old deposit is accepted without a
  round trip and a paused stream resumes (`on_event` wakes it).
- `ChannelClosed` / `ChannelExpired` (by anyone): the row is finalized.
- `Settled`, `CloseRequestCancelled`: the row follows the chain.

After downtime it catches up: every live channel is re-read from chain at start, then the
events since the stored cursor are replayed. RPC outages never stop it: each failed round is
retried with exponential backoff (capped), and `status()` exposes the lag. `confirmations`
blocks are left unprocessed at the head (Tempo finalizes blocks at once, so the default is 0).

Threads: one daemon thread (`start()` / `stop()`, or a `with` block); `poll()` runs one round in
the caller's thread (tests, scripts). Library users start it next to their `SessionServer`;
`mpp serve` runs one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from mpp.core.amounts import decimal_amount
from mpp.core.errors import ChannelNotFound, PaymentError
from mpp.session.engine import SessionServer
from mpp.session.ports import ChannelEvent

__all__ = ["ChainWatcher", "WatcherStatus"]

log = logging.getLogger(__name__)

_FOLLOWED = frozenset(
    {"CloseRequested", "CloseRequestCancelled", "TopUp", "Settled", "ChannelClosed",
     "ChannelExpired"}
)  # fmt: skip


@dataclass(frozen=True)
class WatcherStatus:
    """How far behind the chain the watcher is. `lag_blocks` is None until the first round."""

    head: int | None  # latest block seen
    cursor: int | None  # last block whose events were handled
    lag_blocks: int | None
    last_ok: float | None  # unix time of the last successful round
    failures: int  # consecutive failed rounds (0: healthy)
    running: bool

    @property
    def healthy(self) -> bool:
        return self.failures == 0 and self.last_ok is not None


class ChainWatcher:
    """Follows the escrow for `server`'s channels and runs its settlement policy."""

    def __init__(
        self,
        server: SessionServer,
        *,
        confirmations: int = 0,
        poll_interval: float = 1.0,
        settle_interval: float = 5.0,
        max_backoff: float = 30.0,
        block_range: int = 2_000,
        on_event: Callable[[ChannelEvent], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if confirmations < 0 or poll_interval <= 0 or block_range <= 0:
            raise ValueError("confirmations >= 0, poll_interval > 0 and block_range > 0")
        self.server = server
        self.confirmations = confirmations
        self.poll_interval = poll_interval
        self.settle_interval = settle_interval
        self.max_backoff = max_backoff
        self.block_range = block_range
        self.on_event = on_event
        self._clock = clock
        self._caught_up = False
        self._urgent = True  # run the settlement policy in the first round
        self._last_settle = 0.0
        self._head: int | None = None
        self._last_ok: float | None = None
        self._failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> ChainWatcher:
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="mpp-chain-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def __enter__(self) -> ChainWatcher:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def status(self) -> WatcherStatus:
        cursor = self._cursor(self.server.terms.escrow_contract)
        lag = None if self._head is None or cursor is None else max(0, self._head - cursor)
        running = self._thread is not None and self._thread.is_alive()
        return WatcherStatus(self._head, cursor, lag, self._last_ok, self._failures, running)

    def _run(self) -> None:
        delay = self.poll_interval
        while not self._stop.is_set():
            try:
                self.poll()
                delay = self.poll_interval
            except Exception as exc:  # never crash the server: back off and try again
                self._failures += 1
                delay = min(self.max_backoff, self.poll_interval * 2**self._failures)
                detail = exc.detail if isinstance(exc, PaymentError) else type(exc).__name__
                log.warning("chain watcher round failed (%s); retrying in %.0f s", detail, delay)
            self._stop.wait(delay)

    # --- one round ------------------------------------------------------------------------------

    def poll(self) -> None:
        """One round: catch up if needed, handle new events, run the settlement policy when
        due. Chain errors propagate (the thread backs off); nothing is skipped on failure: the
        cursor only moves past blocks whose events were all handled."""
        chain, store = self.server.chain, self.server.store
        head = chain.block_number()
        self._head = head
        safe = head - self.confirmations
        for escrow in self._escrows():
            if self._cursor(escrow) is None:
                store.put_meta(self._key(escrow), str(max(safe, 0)))
        if not self._caught_up:
            self._catch_up()
            self._caught_up = True
        for escrow in self._escrows():
            self._follow(escrow, safe)
        now = self._clock()
        if self._urgent or now - self._last_settle >= self.settle_interval:
            self._urgent = False
            self._last_settle = now
            self.server.maybe_settle()
        self._failures = 0
        self._last_ok = self._clock()

    def _catch_up(self) -> None:
        """Re-read every live channel: covers events missed while the server was down."""
        for state in self.server.store.channels():
            if state.finalized:
                continue
            try:
                fresh = self.server.refresh(state.channel_id)
            except ChannelNotFound:
                log.warning("channel %s is no longer on chain", state.channel_id)
                continue
            if fresh.close_requested_at:
                self._urgent = True

    def _follow(self, escrow: str, safe: int) -> None:
        store, key = self.server.store, self._key(escrow)
        cursor = self._cursor(escrow)
        assert cursor is not None
        while cursor < safe:
            to = min(safe, cursor + self.block_range)
            for event in self.server.chain.channel_events(escrow, cursor + 1, to):
                self._handle(event)
            store.put_meta(key, str(to))
            cursor = to

    def _handle(self, event: ChannelEvent) -> None:
        if event.name not in _FOLLOWED or self.server.store.get(event.channel_id) is None:
            return  # not a channel of ours (or an open we will hear about from its payer)
        try:
            self.server.refresh(event.channel_id)
        except ChannelNotFound:
            log.warning("channel %s vanished from chain (reorg?)", event.channel_id)
            return
        if event.name == "CloseRequested":
            log.info("payer requested a close of %s: closing it now", event.channel_id)
            self._urgent = True
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # a subscriber's bug must not stop the watcher
                log.exception("chain watcher subscriber failed")

    # --- cursor ---------------------------------------------------------------------------------

    def _escrows(self) -> list[str]:
        terms = self.server.terms
        return [terms.escrow_contract]

    def _key(self, escrow: str) -> str:
        return f"watcher:{self.server.terms.chain_id}:{escrow.lower()}"

    def _cursor(self, escrow: str) -> int | None:
        value = self.server.store.get_meta(self._key(escrow))
        return decimal_amount(value)
