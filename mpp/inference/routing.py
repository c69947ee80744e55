"""Routing: filter the providers of a model, then order them by the request's strategy.

The first provider in the plan is tried first; the rest are the fallback order (used only before
the first byte reaches the client). Filters come first: `allow_external` and both price ceilings.

Strategies (all break remaining ties by combined price, then registration order):

* `cheapest`: a random provider among those within 20 % of the cheapest combined rate
  (input + output cents per million; `5 × rate ≤ 6 × min`, exact integers), then the rest of that
  band in random order, then the others by price.
* `fastest`: the smallest expected time for a reference completion of `REFERENCE_TOKENS` tokens,
  `ttft + REFERENCE_TOKENS / throughput`, from measured statistics.
* `balanced`: the smallest `0.5 × rate / max_rate + 0.5 × time / max_time` over the candidates:
  price and expected time, each relative to the worst candidate, weighted equally.

A provider with no measurement yet is assumed as fast as the best measured one (so it gets tried
and measured); with no measurement at all, every expected time is equal.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Final

from mpp.inference.api import RoutingStrategy
from mpp.inference.registry import ProviderEntry, ProviderStats

__all__ = ["REFERENCE_TOKENS", "expected_seconds", "filter_candidates", "plan"]

REFERENCE_TOKENS: Final = 256
_CHEAP_BAND: Final = (6, 5)  # within 20 %: rate × 5 ≤ min × 6


def filter_candidates(
    entries: Sequence[ProviderEntry],
    *,
    allow_external: bool,
    price_ceiling: tuple[int, int] | None,
) -> list[ProviderEntry]:
    out = [e for e in entries if allow_external or not e.provider.external]
    if price_ceiling is not None:
        out = [e for e in out if e.provider.price.within(*price_ceiling)]
    return out


def expected_seconds(stats: ProviderStats) -> float | None:
    if stats.ttft_s is None and stats.tokens_per_s is None:
        return None
    ttft = stats.ttft_s or 0.0
    speed = stats.tokens_per_s
    return ttft + (REFERENCE_TOKENS / speed if speed else 0.0)


def _times(entries: Sequence[ProviderEntry]) -> dict[str, float]:
    measured = {e.name: expected_seconds(e.stats) for e in entries}
    known = [t for t in measured.values() if t is not None]
    best = min(known, default=1.0)
    return {name: (best if t is None else t) for name, t in measured.items()}


def _by_price(e: ProviderEntry) -> tuple[int, int]:
    return e.provider.price.combined, e.order


def plan(
    entries: Sequence[ProviderEntry],
    strategy: RoutingStrategy,
    rng: random.Random | None = None,
) -> list[ProviderEntry]:
    """The order in which to try `entries` (already filtered)."""
    if not entries:
        return []
    if strategy is RoutingStrategy.CHEAPEST:
        return _cheapest(entries, rng or random.Random())
    times = _times(entries)
    if strategy is RoutingStrategy.FASTEST:
        return sorted(entries, key=lambda e: (times[e.name], *_by_price(e)))
    max_rate = max(e.provider.price.combined for e in entries)
    max_time = max(times.values())

    def score(e: ProviderEntry) -> float:
        price = e.provider.price.combined / max_rate if max_rate else 0.0
        speed = times[e.name] / max_time if max_time > 0 else 0.0
        return 0.5 * price + 0.5 * speed

    return sorted(entries, key=lambda e: (score(e), *_by_price(e)))


def _cheapest(entries: Sequence[ProviderEntry], rng: random.Random) -> list[ProviderEntry]:
    lowest = min(e.provider.price.combined for e in entries)
    num, den = _CHEAP_BAND
    band = [e for e in entries if e.provider.price.combined * den <= lowest * num]
    band.sort(key=lambda e: e.order)
    rng.shuffle(band)
    in_band = {e.name for e in band}
    rest = sorted((e for e in entries if e.name not in in_band), key=_by_price)
    return band + rest
