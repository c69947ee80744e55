"""Per-key token buckets: failed payment credentials per peer (SES-42 as decided: 429).

In-process and in-memory; with several server processes each enforces its own share.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable


class RateLimiter:
    """`rate` tokens per second, bucket size `burst` (default: one second's worth)."""

    def __init__(
        self,
        rate: float = 10.0,
        burst: float | None = None,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else max(rate, 1.0)
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def acquire(self, key: str) -> float:
        """Take one token: 0.0 when allowed, else the seconds until one is available."""
        now = self._clock()
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            wait = 0.0
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)  # most recently used last
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait

    def waiting(self, key: str) -> float:
        """Seconds until `key` has a token again (0.0: it has one); takes nothing."""
        now = self._clock()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    @staticmethod
    def retry_after(wait: float) -> int:
        """Retry-After is whole seconds; never 0 for a refused request."""
        return max(1, math.ceil(wait))
