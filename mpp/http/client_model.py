"""The client's small data types: one paid exchange, the cached challenge of a route, and
helpers that read a server's answers (problem bodies, amounts, Retry-After)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from mpp.core.amounts import decimal_amount, decimal_seconds
from mpp.core.challenge import Challenge
from mpp.core.digest import check_content_digest
from mpp.core.errors import PaymentError
from mpp.core.rfc3339 import parse_rfc3339
from mpp.session.budget import StreamBudget
from mpp.session.terms import SessionTerms
from mpp.session.window import LeadWindow

if TYPE_CHECKING:
    from mpp.http.client_auth import PaymentAuth

PAID_RETRY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
RECEIPTS_KEY = "mpp.receipts"
REUSE_MARGIN = 5.0  # seconds a cached challenge must still have before `expires` (CORE-14)
MAX_CACHED = 256  # cached challenges (one per origin, path and method)
RouteKey = tuple[str, str, str]


class PaymentDeclined(PaymentError):
    """The client will not pay this challenge (nothing was signed or sent)."""

    status = 402
    problem = "payment-required"
    title = "Payment declined by the client"


@dataclass
class PaidExchange:
    """One paid request: its challenge and channel, and the receipts it got."""

    auth: PaymentAuth
    url: str
    challenge: Challenge
    channel_id: str
    unit_price: int
    source: str
    receipts: list[dict[str, Any]] = field(default_factory=list)
    key: RouteKey | None = None  # where the challenge is cached once it paid
    # What the server may make us sign during this response (set when it starts).
    budget: StreamBudget = field(default_factory=lambda: StreamBudget(0, 0, 0))
    # The channel's bandwidth × delay estimator (None: a fixed `prepay_units`, or a fixed price).
    window: LeadWindow | None = None

    def add_receipt(self, data: Mapping[str, Any]) -> None:
        receipt = dict(data)
        self.receipts.append(receipt)
        self.auth.remember_receipt(receipt)


def problem_of(response: httpx.Response) -> dict[str, Any]:
    try:
        data = json.loads(response.content) if response.content else {}
    except (ValueError, httpx.ResponseNotRead, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def amount_of(value: object) -> int | None:
    return decimal_amount(value)


def route_key(url: httpx.URL, method: str) -> RouteKey:
    """(origin, path, method): what a cached challenge is reused for (not the query)."""
    port = url.port or {"https": 443, "http": 80}.get(url.scheme, 0)
    return f"{url.scheme}://{url.host}:{port}", url.path, method.upper()


@dataclass(frozen=True)
class CachedChallenge:
    challenge: Challenge
    terms: SessionTerms
    expires: float | None  # unix seconds

    def usable(self, now: float) -> bool:
        return self.expires is None or self.expires - now > REUSE_MARGIN  # CORE-14

    def fits(self, request: httpx.Request) -> bool:
        """CORE-13: a body-bound challenge only for the same body."""
        if self.challenge.digest is None:
            return True
        try:
            return check_content_digest(self.challenge.digest, request.content)
        except httpx.RequestNotRead:
            return False


def unix_expires(expires: str | None) -> int | None:
    return None if expires is None else int(parse_rfc3339(expires).timestamp())


def superseded(payload: Mapping[str, Any], response: httpx.Response) -> bool:
    """A stale-voucher 402 for a voucher another of ours already overtook (pipelined prepay
    vouchers travel on several connections and may land out of order): nothing to do."""
    if response.status_code != 402 or payload.get("action") != "voucher":
        return False
    accepted = amount_of(problem_of(response).get("acceptedCumulative"))
    cumulative = amount_of(payload.get("cumulativeAmount"))
    return accepted is not None and cumulative is not None and accepted >= cumulative


def retry_after(response: httpx.Response, cap: float = 5.0) -> float:
    seconds = decimal_seconds(response.headers.get("retry-after", "1"))
    return 1.0 if seconds is None else min(cap, float(seconds))
