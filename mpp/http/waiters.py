"""Per-channel wake-ups: a paused metered stream sleeps until a voucher for its channel lands.

Event-driven (SES-31 "pause until a voucher advances acceptedCumulative"): whoever accepts a
voucher or topUp calls `notify(channel_id)`; every waiter of that channel wakes at once. No
polling. Waiters subscribe *before* their last balance check so a voucher accepted in between
is never missed.

Scope: one event loop (one server process). A voucher accepted by another server process does
not wake a stream paused here (it ends after its timeout); several processes need a shared
notification channel (e.g. PostgreSQL LISTEN/NOTIFY) calling `notify`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager


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

    @contextmanager
    def subscribe(self, channel_id: str) -> Iterator[Subscription]:
        cid = channel_id.lower()
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

    def notify(self, channel_id: str) -> int:
        """Wake every stream paused on `channel_id`; returns how many were waiting."""
        subs = self._subs.get(channel_id.lower(), ())
        for sub in subs:
            sub.fire()
        return len(subs)

    def waiting(self, channel_id: str) -> int:
        return len(self._subs.get(channel_id.lower(), ()))
