"""The client's lookahead windows, one per channel (mpp.session.window: bandwidth × delay), or
the fixed `prepay_units` override. A fixed-price route has no window: each request pays exactly
its price on its own attempt."""

from __future__ import annotations

import threading
import time

from mpp.http.client.routes import MAX_CACHED
from mpp.session.policy import SpendingPolicy
from mpp.session.terms import SessionTerms
from mpp.session.window import LeadWindow

__all__ = ["LeadWindows"]


class LeadWindows:
    def __init__(self, policy: SpendingPolicy, prepay_units: int | None) -> None:
        self._policy = policy
        self.prepay_units = prepay_units
        self._windows: dict[str, LeadWindow] = {}
        self._lock = threading.Lock()  # callers may hold the client's lock

    def window(self, channel_id: str | None, terms: SessionTerms) -> LeadWindow | None:
        """The channel's window (a fresh one for a channel not opened yet); None with a fixed
        `prepay_units` or for a fixed-price route."""
        if self.prepay_units is not None or terms.unit_type is None:
            return None
        policy = self._policy
        fresh = LeadWindow(policy.lead_units_cap(terms.amount), policy.max_lead_seconds)
        if channel_id is None:
            return fresh
        with self._lock:
            window = self._windows.get(channel_id)
            if window is None:
                if len(self._windows) >= MAX_CACHED:
                    del self._windows[next(iter(self._windows))]
                window = self._windows[channel_id] = fresh
            window.resume(time.monotonic())
        return window

    def lead(self, channel_id: str | None, terms: SessionTerms) -> int:
        """Units to authorize beyond a request's first unit (0 for a fixed price)."""
        if self.prepay_units is not None:
            return self.prepay_units
        window = self.window(channel_id, terms)
        return 0 if window is None else window.units()
