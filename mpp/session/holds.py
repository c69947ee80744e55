"""Reservations of THIS process: charged (in `spent`) but not yet delivered, per channel."""

from __future__ import annotations

import threading


class Holds:
    """Reserved-but-undelivered charges of THIS process, per channel (SES-30 reservations).

    They are in `spent` in the store (charged before delivery, SES-28) but not yet delivered,
    so receipts leave them out: a payer never closes for more than it received. In-process by
    nature: a crash forgets them and leaves them charged-but-unsent, which DESIGN allows.
    """

    def __init__(self) -> None:
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def get(self, cid: str) -> int:
        with self._lock:
            return self._held.get(cid, 0)

    def add(self, cid: str, amount: int) -> None:
        with self._lock:
            self._held[cid] = self._held.get(cid, 0) + amount

    def take(self, cid: str, amount: int) -> int:
        """Remove up to `amount`; returns how much was actually held."""
        with self._lock:
            held = self._held.get(cid, 0)
            taken = min(held, max(0, amount))
            if held - taken > 0:
                self._held[cid] = held - taken
            else:
                self._held.pop(cid, None)
            return taken
