"""The provider registry: which providers serve which model ids, at what price, how fast.

Speeds are measured from real requests (exponentially weighted): time to first token, and
generation throughput after it. An operator may seed them with expectations so routing is sensible
before the first request; measurements then take over.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from mpp.inference.providers.base import Provider

__all__ = ["ProviderEntry", "ProviderStats", "Registry"]

_ALPHA: Final = 0.3  # weight of the newest observation
# Throughput is measured over the inter-token gaps; shorter runs say more about TTFT than speed.
_MIN_TOKENS_FOR_SPEED: Final = 4


@dataclass
class ProviderStats:
    ttft_s: float | None = None
    tokens_per_s: float | None = None
    requests: int = 0
    failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def observe(self, ttft_s: float, tokens: int, generation_s: float) -> None:
        """One successful completion: `tokens` generated in `generation_s` after the first one."""
        with self._lock:
            self.requests += 1
            self.ttft_s = _ewma(self.ttft_s, ttft_s)
            if tokens >= _MIN_TOKENS_FOR_SPEED and generation_s > 0:
                self.tokens_per_s = _ewma(self.tokens_per_s, (tokens - 1) / generation_s)

    def observe_failure(self) -> None:
        with self._lock:
            self.requests += 1
            self.failures += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "ttft_ms": None if self.ttft_s is None else round(self.ttft_s * 1000, 3),
            "tokens_per_second": None if self.tokens_per_s is None else round(self.tokens_per_s, 1),
            "requests": self.requests,
            "failures": self.failures,
        }


def _ewma(old: float | None, new: float) -> float:
    return new if old is None else (1 - _ALPHA) * old + _ALPHA * new


@dataclass(frozen=True)
class ProviderEntry:
    provider: Provider
    stats: ProviderStats
    order: int  # registration order: the last tie-breaker

    @property
    def name(self) -> str:
        return self.provider.name


_PER_TOKEN = ("input_base_units_per_token", "output_base_units_per_token")


class Registry:
    """Providers by name; lookups by model id keep registration order."""

    def __init__(self, providers: Iterable[Provider] = ()) -> None:
        self._entries: dict[str, ProviderEntry] = {}
        for provider in providers:
            self.add(provider)

    def add(
        self,
        provider: Provider,
        *,
        expected_ttft_s: float | None = None,
        expected_tokens_per_s: float | None = None,
    ) -> ProviderEntry:
        if provider.name in self._entries:
            raise ValueError(f"duplicate provider name {provider.name!r}")
        stats = ProviderStats(ttft_s=expected_ttft_s, tokens_per_s=expected_tokens_per_s)
        entry = ProviderEntry(provider, stats, len(self._entries))
        self._entries[provider.name] = entry
        return entry

    def __iter__(self) -> Iterator[ProviderEntry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> ProviderEntry:
        return self._entries[name]

    def for_model(self, model: str) -> list[ProviderEntry]:
        return [e for e in self._entries.values() if model in e.provider.models]

    def model_ids(self) -> list[str]:
        seen: dict[str, None] = {}
        for entry in self._entries.values():
            seen.update(dict.fromkeys(entry.provider.models))
        return list(seen)

    def models_listing(self, created: int) -> dict[str, Any]:
        """The `GET /v1/models` body: each model with its providers' prices and measured speed."""
        data = []
        for model in self.model_ids():
            providers = [
                {
                    "name": e.name,
                    "input_price_per_million": e.provider.price.input_per_million,
                    "output_price_per_million": e.provider.price.output_per_million,
                    # The same in base units of a 6-decimal stablecoin, exact decimal strings.
                    **dict(zip(_PER_TOKEN, e.provider.price.base_units_per_token(), strict=True)),
                    "external": e.provider.external,
                    **e.stats.snapshot(),
                }
                for e in self.for_model(model)
            ]
            data.append(
                {
                    "id": model,
                    "object": "model",
                    "created": created,
                    "owned_by": "mpp",
                    "pricing": {
                        "currency": "USD",
                        "unit": "cents per million tokens",
                        "input_price_per_million": min(
                            p["input_price_per_million"] for p in providers
                        ),
                        "output_price_per_million": min(
                            p["output_price_per_million"] for p in providers
                        ),
                    },
                    "providers": providers,
                }
            )
        return {"object": "list", "data": data}

    async def aclose(self) -> None:
        for entry in self._entries.values():
            await entry.provider.aclose()
