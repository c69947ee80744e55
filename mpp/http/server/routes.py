"""What the gate is configured with and what it sees of a request, framework-neutral.

A `Route` is a path (exact, or a prefix ending in `*`) with its `Price`; a `RequestInfo` is the
part of an HTTP request the payment decisions need (method, path, lowercase headers, the whole
body for its digest, CORE-13, and the peer address for the failure rate limit, SES-42).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mpp.charge.terms import Split

__all__ = ["ChargeOptions", "Headers", "Price", "RequestInfo", "Route"]

Headers = Sequence[tuple[str, str]]  # lowercase names


INTENTS = ("session", "charge")


@dataclass(frozen=True)
class ChargeOptions:
    """More terms for a route's tempo/charge challenge (mpp.charge.terms): a memo the primary
    transfer must carry, splits to other recipients, the submission modes accepted, and the
    merchant's reference."""

    memo: str | None = None
    splits: tuple[Split, ...] = ()
    supported_modes: tuple[str, ...] | None = None
    external_id: str | None = None


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
    charge_amount: int | None = None  # a metered price: one request paid with charge instead
    charge: ChargeOptions = ChargeOptions()

    def __post_init__(self) -> None:
        if not self.intents or any(i not in INTENTS for i in self.intents):
            raise ValueError(f"intents must be a non-empty subset of {INTENTS}")
        if len(set(self.intents)) != len(self.intents):
            raise ValueError("intents are listed once each")
        if "charge" in self.intents and self.metered and self.charge_amount is None:
            raise ValueError(
                "a metered price is paid per unit: charge needs a price per request (charge_amount)"
            )
        if self.charge_amount is not None and not self.metered:
            raise ValueError("charge_amount is for metered prices; a fixed price charges amount")

    @property
    def per_request(self) -> int:
        """What one request costs when it is paid with charge."""
        return self.charge_amount if self.charge_amount is not None else self.amount

    @property
    def metered(self) -> bool:
        return self.unit_type is not None

    def offers(self, intent: str) -> bool:
        return intent in self.intents


@dataclass(frozen=True)
class Route:
    """`path` exact (or a prefix ending in `*`); `methods` are the paid content methods.
    `streams`: for a metered price that also offers charge, which requests stream (those are
    paid per unit with a session only; the others may pay `charge_amount` once)."""

    path: str
    price: Price
    methods: frozenset[str] | None = None
    streams: Callable[[RequestInfo], bool] | None = None

    def offers(self, intent: str, info: RequestInfo) -> bool:
        """Whether this request may be paid with `intent`."""
        if not self.price.offers(intent):
            return False
        if intent == "charge" and self.price.metered and self.streams is not None:
            return not self.streams(info)
        return True

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
