"""The payer's lookahead window: bandwidth × delay, like TCP's congestion window.

A metered stream pauses whenever the server has delivered everything the payer authorized and
the next voucher is still on its way. To never pause, the authorized lead must cover what the
stream consumes during one voucher round trip, with margin: `lead ≥ 2 × rate × RTT`. The rate
(units per second, as the payer reads them) and the voucher round-trip time are measured while
the stream runs; until they are known, and to absorb what neither measurement sees (data queued
in socket buffers between the server and the reader), a floor starts at `INITIAL_UNITS` and
doubles each time the server actually pauses the stream. After idle time the floor halves and
the rate estimate decays, so a channel that streamed fast an hour ago does not keep a large
authorization outstanding.

The lead never exceeds the spending policy: `max_units` (its `max_lead` in value, divided by the
unit price) and `max_seconds` of consumption at the measured rate.

Pure: no I/O and no clock; callers pass `now` (seconds, monotonic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["HARD_MAX_UNITS", "IDLE_SECONDS", "INITIAL_UNITS", "UNMEASURED_MAX_UNITS", "LeadWindow"]

INITIAL_UNITS = 16  # before anything is measured (an LLM answer's first sentence)
UNMEASURED_MAX_UNITS = 256  # until a rate is measured, pauses grow the floor no further
HARD_MAX_UNITS = 1 << 20  # a floor that keeps doubling stops here, whatever the policy says
IDLE_SECONDS = 5.0  # a pause in delivery this long counts as idle: the window shrinks
SAMPLE_SECONDS = 0.05  # a rate sample spans at least this long
RTT_GAIN = 0.25  # weight of a new round-trip sample (rises are taken at once)


@dataclass
class LeadWindow:
    """How many units a payer keeps authorized ahead of what it was delivered."""

    max_units: int | None = None
    max_seconds: float | None = None
    floor: int = INITIAL_UNITS
    rate: float = 0.0  # units per second
    rtt: float = 0.0  # seconds, voucher sent → answered
    pauses: int = 0  # times the server ran dry on us
    _sample_start: float | None = None
    _sample_units: int = 0
    _last: float | None = None
    _units: int = 1
    _units_key: tuple[object, ...] = ()

    def units(self) -> int:
        """The lead to keep now: max(floor, ⌈2 × rate × RTT⌉), within the policy, at least 1.
        Asked for every chunk a stream reads; recomputed only when an input changed."""
        key = (self.floor, self.rate, self.rtt, self.max_units, self.max_seconds)
        if key != self._units_key:
            lead = max(self.floor, math.ceil(2 * self.rate * self.rtt))
            self._units = max(1, min(lead, self.cap()))
            self._units_key = key
        return self._units

    def cap(self) -> int:
        """The largest lead the policy allows now (it follows the measured rate)."""
        cap = HARD_MAX_UNITS
        if self.max_units is not None:
            cap = min(cap, self.max_units)
        if self.rate <= 0:
            # Nothing measured yet: a server cannot talk us into a large lead with need-voucher
            # events before we have seen what it delivers.
            cap = min(cap, UNMEASURED_MAX_UNITS)
        elif self.max_seconds is not None:
            # Never more than `max_seconds` of the stream, but never below the initial window
            # (a slow stream still gets its first sentence without waiting).
            cap = min(cap, max(INITIAL_UNITS, math.ceil(self.rate * self.max_seconds)))
        return cap

    def delivered(self, units: int, now: float) -> None:
        """`units` arrived at `now`: the rate sample grows; a long gap first shrinks the window."""
        if units <= 0:
            return
        if self._last is not None and now - self._last >= IDLE_SECONDS:
            self.idle(now - self._last)
        self._last = now
        if self._sample_start is None:
            self._sample_start, self._sample_units = now, units
            return
        self._sample_units += units
        span = now - self._sample_start
        if span >= SAMPLE_SECONDS:
            sample = self._sample_units / span
            # Rises are believed at once (the lead must keep up); falls are smoothed.
            self.rate = sample if sample > self.rate else 0.75 * self.rate + 0.25 * sample
            self._sample_start, self._sample_units = now, 0

    def round_trip(self, seconds: float) -> None:
        """A voucher was answered `seconds` after it was sent."""
        if seconds < 0 or not math.isfinite(seconds):
            return
        if seconds > self.rtt:
            self.rtt = seconds
        else:
            self.rtt = (1 - RTT_GAIN) * self.rtt + RTT_GAIN * seconds

    def paused(self) -> None:
        """The server ran out of authorization (an uncovered need-voucher): double the floor."""
        self.pauses += 1
        self.floor = min(self.cap(), max(1, self.floor) * 2)

    def idle(self, seconds: float) -> None:
        """Nothing was delivered for `seconds`: halve the floor per idle period, forget rate."""
        periods = int(seconds // IDLE_SECONDS)
        if periods <= 0:
            return
        self.floor = max(INITIAL_UNITS, self.floor >> min(periods, 30))
        self.rate = self.rate / (2 ** min(periods, 30))
        self._sample_start, self._sample_units = None, 0

    def resume(self, now: float) -> None:
        """A new response on this channel starts: account for the idle time since the last."""
        if self._last is not None and now - self._last >= IDLE_SECONDS:
            self.idle(now - self._last)
        self._last = now
        self._sample_start, self._sample_units = None, 0
