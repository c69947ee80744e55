"""Where the middleware's blocking engine work runs, so that no third party can slow a payer.

- The **paying lane**: ONE worker thread for store-only work on channels this process knows
  (vouchers, charges, releases). One thread means no SQLite lock contention, and its
  millisecond busy-sleeps, between this process's own requests.
- The **lookup lane**: a voucher naming a channel this process has not seen yet needs a store
  read and, for an id nobody opened, a chain RPC. Anyone can send such ids, so they run here,
  at most `LOOKUP_CONCURRENCY` at once; past `LOOKUP_QUEUE` waiting, the answer is an
  immediate 503 with Retry-After. The paying lane never waits behind them. (The engine keeps
  the negative cache: an id found missing on chain is not looked up again within its TTL.)
- Chain work (open, topUp, close) runs on anyio's default thread pool.

A channel becomes known once a request on it succeeds; the set is bounded (least recently
used ids are forgotten first, and a forgotten channel simply takes the lookup lane once more).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

__all__ = ["LOOKUP_CONCURRENCY", "LOOKUP_QUEUE", "LaneBusy", "WorkLanes"]

T = TypeVar("T")

LOOKUP_CONCURRENCY = 4
LOOKUP_QUEUE = 64
MAX_KNOWN = 100_000


class LaneBusy(Exception):
    """The lookup lane is full: answer 503 + Retry-After without doing the work."""


class WorkLanes:
    def __init__(
        self, lookup_concurrency: int = LOOKUP_CONCURRENCY, lookup_queue: int = LOOKUP_QUEUE
    ) -> None:
        self._lookup_concurrency = max(1, lookup_concurrency)
        self._lookup_queue = max(0, lookup_queue)
        self._paying: anyio.CapacityLimiter | None = None  # created on the event loop
        self._lookup: anyio.CapacityLimiter | None = None
        self._lookups = 0  # running or waiting on the lookup lane
        self._known: OrderedDict[str, None] = OrderedDict()

    def knows(self, channel_id: str) -> bool:
        if channel_id in self._known:
            self._known.move_to_end(channel_id)
            return True
        return False

    def learn(self, channel_id: str) -> None:
        """A request on `channel_id` succeeded: its vouchers take the paying lane from now on."""
        self._known[channel_id] = None
        self._known.move_to_end(channel_id)
        while len(self._known) > MAX_KNOWN:
            self._known.popitem(last=False)

    async def paying(self, work: Callable[[], T]) -> T:
        if self._paying is None:
            self._paying = anyio.CapacityLimiter(1)
        return await anyio.to_thread.run_sync(work, limiter=self._paying)

    async def lookup(self, work: Callable[[], T]) -> T:
        """Run `work` on the bounded lookup lane; LaneBusy when too many already wait."""
        if self._lookup is None:
            self._lookup = anyio.CapacityLimiter(self._lookup_concurrency)
        if self._lookups >= self._lookup_concurrency + self._lookup_queue:
            raise LaneBusy
        self._lookups += 1  # counted here: the limiter sees a waiter only once it awaits
        try:
            return await anyio.to_thread.run_sync(work, limiter=self._lookup)
        finally:
            self._lookups -= 1

    async def voucher(self, channel_id: str, work: Callable[[], T]) -> T:
        """A voucher's engine work: the paying lane for a known channel, else the lookup lane."""
        if self.knows(channel_id):
            return await self.paying(work)
        return await self.lookup(work)
