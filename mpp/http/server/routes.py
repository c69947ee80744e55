"""What the gate is configured with and what it sees of a request, framework-neutral.

A `Route` is a path (exact, or a prefix ending in `*`) with its `Price`; a `RequestInfo` is the
part of an HTTP request the payment decisions need (method, path, lowercase headers, the whole
body for its digest, CORE-13, and the peer address for the failure rate limit, SES-42).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Headers", "Price", "RequestInfo", "Route"]

Headers = Sequence[tuple[str, str]]  # lowercase names


INTENTS = ("session", "charge")


@dataclass(frozen=True)
class Price:
    """A route's price: `amount` base units per request, or per unit when `unit_type` is set.

    `intents`: how it may be paid, in the order the 402 offers them. `session` (from a payment
    channel: vouchers, no transaction per request) and/or `charge` (one on-chain transfer per
    request, for a price per request only)."""

    amount: int
    unit_type: str | None = None
    suggested_deposit: int | None = None
    description: str | None = None
    intents: tuple[str, ...] = ("session",)

    def __post_init__(self) -> None:
        if not self.intents or any(i not in INTENTS for i in self.intents):
            raise ValueError(f"intents must be a non-empty subset of {INTENTS}")
        if len(set(self.intents)) != len(self.intents):
            raise ValueError("intents are listed once each")
        if "charge" in self.intents and self.metered:
            raise ValueError("a metered price is paid per unit: charge needs a price per request")

    @property
    def metered(self) -> bool:
        return self.unit_type is not None

    def offers(self, intent: str) -> bool:
        return intent in self.intents


@dataclass(frozen=True)
class Route:
    """`path` exact (or a prefix ending in `*`); `methods` are the paid content methods."""

    path: str
    price: Price
    methods: frozenset[str] | None = None

    def matches(self, path: str) -> bool:
        if self.path.endswith("*"):
            return path.startswith(self.path[:-1])
        return path == self.path


@dataclass(frozen=True)
class RequestInfo:
    method: str
    path: str
    headers: Headers
    body: bytes
    peer: str = ""  # the client's address (the failure rate limit's key)

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]
