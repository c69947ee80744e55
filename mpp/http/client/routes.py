"""What the client remembers per route (origin, path, method): the last challenge that paid for
it, reused while unexpired so the next request pays on its first attempt (AMB-05), and where a
`HEAD` gave no usable challenge. And which of the challenges a 402 offers it pays (CORE-39)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

from mpp.charge.terms import ChargeTerms
from mpp.core.challenge import Challenge, parse_challenges
from mpp.core.digest import check_content_digest
from mpp.core.errors import PaymentError
from mpp.core.negotiate import rank_offers
from mpp.http.client.exchange import RouteKey, unix_expires
from mpp.session.scheme import INTENT, METHOD
from mpp.session.terms import SessionTerms, TermsError

__all__ = [
    "MAX_CACHED",
    "CachedChallenge",
    "RouteChallenges",
    "best_offer",
    "choose_challenge",
    "route_key",
]

REUSE_MARGIN = 5.0  # seconds a cached challenge must still have before `expires` (CORE-14)
MAX_CACHED = 256  # cached challenges (one per origin, path and method)


def route_key(url: httpx.URL, method: str) -> RouteKey:
    """(origin, path, method): what a cached challenge is reused for (not the query)."""
    port = url.port or {"https": 443, "http": 80}.get(url.scheme, 0)
    return f"{url.scheme}://{url.host}:{port}", url.path, method.upper()


def choose_challenge(
    response: httpx.Response, accept_payment: str
) -> tuple[Challenge, SessionTerms] | None:
    """The best unexpired tempo/session challenge of a response, in our `Accept-Payment`
    order; None when it offers none we support (CORE-39) or all are expired (CORE-14)."""
    for ch in _usable(response, accept_payment, (INTENT,)):
        return ch, SessionTerms.from_request(ch.request)  # parsed once more: it was valid
    return None


def best_offer(response: httpx.Response, accept_payment: str) -> Challenge | None:
    """The best unexpired challenge we can pay, session or charge, in `Accept-Payment` order."""
    return next(_usable(response, accept_payment, (INTENT, "charge")), None)


def _usable(
    response: httpx.Response, accept_payment: str, intents: tuple[str, ...]
) -> Iterator[Challenge]:
    """The response's tempo challenges of these intents whose terms parse and that have not
    expired (CORE-14), best first in our `Accept-Payment` order."""
    try:
        offered = parse_challenges(response.headers.get_list("www-authenticate"), strict=False)
    except PaymentError:
        return
    now = time.time()
    for ch in _accepted(offered, accept_payment):
        if ch.method != METHOD or ch.intent not in intents:
            continue
        try:
            if ch.intent == INTENT:
                SessionTerms.from_request(ch.request)
            else:
                ChargeTerms.from_request(ch.request)
            expires = ch.expires_at()
        except (TermsError, ValueError):
            continue
        if expires is None or expires.timestamp() > now:
            yield ch


def _accepted(offered: list[Challenge], accept_payment: str) -> list[Challenge]:
    """The offers our own `Accept-Payment` accepts, best first (CORE-37): never one it does
    not name, even when the server offers nothing else."""
    return rank_offers(
        offered, accept_payment, key=lambda c: (c.method, c.intent), all_when_none_match=False
    )


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
        except RuntimeError:  # a streamed body, not read (httpx and httpx2 alike)
            return False


class RouteChallenges:
    """The per-route challenge cache (bounded, oldest out first; thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cached: dict[RouteKey, CachedChallenge] = {}
        self._no_head: set[RouteKey] = set()

    def get(self, key: RouteKey) -> CachedChallenge | None:
        """The route's challenge if it is still usable (CORE-14: never an expired one)."""
        with self._lock:
            cached = self._cached.get(key)
            if cached is not None and not cached.usable(time.time()):
                del self._cached[key]
                cached = None
        return cached

    def remember(self, key: RouteKey, challenge: Challenge, terms: SessionTerms) -> CachedChallenge:
        cached = CachedChallenge(challenge, terms, unix_expires(challenge.expires))
        with self._lock:
            self._cached.pop(key, None)
            if len(self._cached) >= MAX_CACHED:
                del self._cached[next(iter(self._cached))]  # the oldest
            self._cached[key] = cached
        return cached

    def forget(self, key: RouteKey) -> None:
        with self._lock:
            self._cached.pop(key, None)

    def head_useless(self, key: RouteKey) -> bool:
        """A `HEAD` on this route gave no digest-free challenge before: do not ask again."""
        return key in self._no_head

    def head_failed(self, key: RouteKey) -> None:
        with self._lock:
            if len(self._no_head) >= MAX_CACHED:
                self._no_head.pop()
            self._no_head.add(key)
