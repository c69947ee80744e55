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


@dataclass(frozen=True)
class Price:
    """A route's price: `amount` base units per request, or per unit when `unit_type` is set."""

    amount: int
    unit_type: str | None = None
    suggested_deposit: int | None = None
    description: str | None = None

    @property
    def metered(self) -> bool:
        return self.unit_type is not None


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
