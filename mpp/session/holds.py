"""Reservations of THIS process: charged (in `spent`) but not yet delivered, per channel.

They are in `spent` in the store (charged before delivery, SES-28) but not delivered yet, so
receipts leave them out (a payer never closes for more than it received) and settlement captures
`spent - held` (SES-36: never more than was consumed). In-process by nature: a crash forgets
them and leaves them charged-but-unsent, which docs/development.md allows (at most one
reservation window per stream and crash).

Two guarantees the engine builds on:
- `lock(channel_id)` serializes "change the store's `spent` and the holds together" with "read
  both to decide a capture", so a settlement never sees a reservation in `spent` that is missing
  from the holds (it would capture undelivered units).
- `freeze(channel_id)` stops delivery from existing reservations (`commit` refuses) once a
  channel must not serve any more: a close is in flight or the payer requested one (SES-21).
  What is held then stays undelivered, so the capture computed at that moment stays exact.
"""

from __future__ import annotations

import threading
from zlib import crc32

from mpp.session.ports import ChannelState

_STRIPES = 64


class Holds:
    """Reserved-but-undelivered charges of this process, per channel."""

    def __init__(self) -> None:
        self._held: dict[str, int] = {}
        self._frozen: set[str] = set()
        self._lock = threading.Lock()
        self._stripes = [threading.RLock() for _ in range(_STRIPES)]

    def lock(self, cid: str) -> threading.RLock:
        """The per-channel lock (striped: a bounded number of locks for any number of ids)."""
        return self._stripes[crc32(cid.encode()) % _STRIPES]

    def get(self, cid: str) -> int:
        with self._lock:
            return self._held.get(cid, 0)

    def add(self, cid: str, amount: int) -> None:
        if amount <= 0:
            return
        with self._lock:
            self._held[cid] = self._held.get(cid, 0) + amount

    def take(self, cid: str, amount: int) -> int:
        """Remove up to `amount` (given back, or given up); returns how much was held."""
        with self._lock:
            return self._take(cid, amount)

    def commit(self, cid: str, amount: int, *, force: bool = False) -> bool:
        """Reserved units are delivered now. Refused (False, nothing changes) while the channel
        is frozen, unless `force` (units already on their way to the client)."""
        with self._lock:
            if cid in self._frozen and not force:
                return False
            self._take(cid, amount)
            return True

    def freeze(self, cid: str) -> None:
        with self._lock:
            self._frozen.add(cid)

    def thaw(self, cid: str) -> None:
        with self._lock:
            self._frozen.discard(cid)

    def frozen(self, cid: str) -> bool:
        with self._lock:
            return cid in self._frozen

    def follow(self, state: ChannelState) -> None:
        """SES-21: a channel with a close requested (or finalized) delivers nothing more, not
        even from reservations made before: what is held stays undelivered. A top-up cancels
        the request on chain and serving resumes."""
        if state.finalized or state.close_requested_at:
            self.freeze(state.channel_id)
        else:
            self.thaw(state.channel_id)

    def _take(self, cid: str, amount: int) -> int:
        held = self._held.get(cid, 0)
        taken = min(held, max(0, amount))
        if held - taken > 0:
            self._held[cid] = held - taken
        else:
            self._held.pop(cid, None)
        return taken
