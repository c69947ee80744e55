"""Per-channel wake-ups: a paused metered stream sleeps until a voucher for its channel lands.

Event-driven (SES-31 "pause until a voucher advances acceptedCumulative"): whoever accepts a
voucher or topUp calls `notify(channel_id)`; every waiter of that channel wakes at once. No
polling. Waiters subscribe *before* their last balance check so a voucher accepted in between
is never missed.

Scope: one event loop. Across server processes, `attach(store)` subscribes to a store that
offers the optional voucher feed (ports.VoucherFeed: PostgreSQL LISTEN/NOTIFY, announced in the
voucher's own transaction) and forwards each channel id from the store's listener thread into
this loop. SQLite and memory stores have no feed: a voucher accepted by another process does not
wake a stream paused here (it ends after its timeout), so run one process per SQLite file or
use PostgreSQL for several.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import anyio.to_thread


class Subscription:
    """One waiter's ticket; `wait()` returns True when notified, False on timeout."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()

    async def wait(self, timeout: float | None) -> bool:
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        self._event.clear()
        return True


class VoucherWaiters:
    """Channel id (lowercase) → subscribers. Not thread-safe: call from the event loop."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = {}
        self._attached: set[int] = set()
        self._unsubscribe: list[Callable[[], None]] = []
        self._attaching: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # where the paused streams run

    async def attach(self, store: object) -> bool:
        """Forward the store's cross-process voucher feed here (once per store); False when
        the store has none. Call from the event loop that runs the paused streams."""
        subscribe = getattr(store, "subscribe_vouchers", None)
        if subscribe is None:
            return False
        if id(store) in self._attached:
            return True
        if self._attaching is None:
            self._attaching = asyncio.Lock()
        async with self._attaching:  # concurrent first requests wait for one LISTEN
            if id(store) in self._attached:
                return True
            await self._subscribe(subscribe)
            self._attached.add(id(store))
        return True

    async def _subscribe(self, subscribe: Callable[..., Callable[[], None]]) -> None:
        loop = asyncio.get_running_loop()

        def forward(channel_id: str | None) -> None:  # on the store's listener thread
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(self._from_feed, channel_id)

        # Blocks until LISTEN is active, so no voucher after this returns is missed.
        self._unsubscribe.append(await anyio.to_thread.run_sync(subscribe, forward))

    def detach(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        self._attached.clear()

    def _from_feed(self, channel_id: str | None) -> None:
        if channel_id is not None:
            self.notify(channel_id)
            return
        for cid in list(self._subs):  # announcements may have been missed: wake everyone
            self.notify(cid)

    @contextmanager
    def subscribe(self, channel_id: str) -> Iterator[Subscription]:
        cid = channel_id.lower()
        self._loop = asyncio.get_running_loop()
        sub = Subscription()
        self._subs.setdefault(cid, set()).add(sub)
        try:
            yield sub
        finally:
            subs = self._subs.get(cid)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[cid]

    def wake(self, channel_id: str | None) -> None:
        """From any thread (the chain watcher, a signal handler): wake the streams paused on
        `channel_id`, or all of them for None."""
        loop = self._loop
        if loop is None:
            return  # nothing ever paused here
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            loop.call_soon_threadsafe(self._from_feed, channel_id)

    def notify(self, channel_id: str) -> int:
        """Wake every stream paused on `channel_id`; returns how many were waiting."""
        subs = self._subs.get(channel_id.lower(), ())
        for sub in subs:
            sub.fire()
        return len(subs)

    def waiting(self, channel_id: str) -> int:
        return len(self._subs.get(channel_id.lower(), ()))
