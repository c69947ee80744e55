"""`Accept-Payment` parsing and offer ranking (CORE-36..38).

Weights are kept as integer thousandths (RFC 9110 `weight`: `q=0.000`..`q=1`), never floats.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from mpp.core.challenge import Challenge
from mpp.core.errors import AcceptPaymentParseError
from mpp.core.limits import MAX_ACCEPT_PAYMENT_LENGTH

T = TypeVar("T")

_NAME = re.compile(r"\*|[A-Za-z0-9][A-Za-z0-9-]*+", re.ASCII)
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?", re.ASCII)
_PARAM_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]++")


@dataclass(frozen=True, slots=True)
class AcceptRange:
    method: str  # "*" or a method name
    intent: str  # "*" or an intent name
    q: int = 1000  # thousandths

    def matches(self, method: str, intent: str) -> bool:
        return (self.method in ("*", method)) and (self.intent in ("*", intent))

    @property
    def specificity(self) -> int:
        # Decision: a method-specific range beats an intent-specific one ("tempo/*" over
        # "*/session"); both beat "*/*", and "tempo/session" beats all.
        return (2 if self.method != "*" else 0) + (1 if self.intent != "*" else 0)


def _parse_q(raw: str) -> int:
    if _QVALUE.fullmatch(raw) is None:
        raise AcceptPaymentParseError(f"invalid weight q={raw[:16]}")
    whole, _, frac = raw.partition(".")
    return int(whole) * 1000 + int((frac + "000")[:3])


def _parse_range(element: str) -> AcceptRange:
    head, *params = element.split(";")
    method, slash, intent = head.strip(" \t").partition("/")
    if not slash or _NAME.fullmatch(method) is None or _NAME.fullmatch(intent) is None:
        raise AcceptPaymentParseError(f"invalid payment range {head.strip()[:32]!r}")
    q = 1000
    seen_q = False
    for param in params:
        name, eq, value = param.strip(" \t").partition("=")
        name = name.strip(" \t").lower()
        if not eq or _PARAM_NAME.fullmatch(name) is None:
            raise AcceptPaymentParseError("invalid range parameter")
        if name == "q":
            if seen_q:
                raise AcceptPaymentParseError("duplicate q")
            q, seen_q = _parse_q(value.strip(" \t")), True
        # Other parameters (currency, network: AMB-18 drafts) are ignored.
    return AcceptRange(method.lower(), intent.lower(), q)


def parse_accept_payment(value: str) -> list[AcceptRange]:
    """`#( (method / "*") "/" (intent / "*") [ ";q=" weight ] )`; AcceptPaymentParseError if bad."""
    if len(value) > MAX_ACCEPT_PAYMENT_LENGTH:
        raise AcceptPaymentParseError("Accept-Payment too long")
    ranges = [_parse_range(e) for e in value.split(",") if e.strip(" \t")]
    if not ranges:
        raise AcceptPaymentParseError("empty Accept-Payment")
    return ranges


def weight_for(ranges: Sequence[AcceptRange], method: str, intent: str) -> int | None:
    """q of the most specific matching range (first one on ties), None when nothing matches."""
    best: AcceptRange | None = None
    for r in ranges:
        if r.matches(method, intent) and (best is None or r.specificity > best.specificity):
            best = r
    return None if best is None else best.q


def rank_challenges(challenges: Sequence[Challenge], accept_payment: str | None) -> list[Challenge]:
    """rank_offers for challenges (their method and intent)."""
    return rank_offers(challenges, accept_payment, key=lambda c: (c.method, c.intent))


def rank_offers(
    offers: Sequence[T],
    accept_payment: str | None,
    *,
    key: Callable[[T], tuple[str, str]],
    all_when_none_match: bool = True,
) -> list[T]:
    """CORE-37/38: offers the client accepts, by q descending, server order kept on ties.

    No header or a malformed one → all offers unchanged (CORE-38). If nothing is acceptable,
    all offers are returned (`all_when_none_match`, the MAY of CORE-38) so a 402 still carries
    challenges (CORE-29).
    """
    if accept_payment is None:
        return list(offers)
    try:
        ranges = parse_accept_payment(accept_payment)
    except AcceptPaymentParseError:
        return list(offers)
    weighted: list[tuple[int, int, T]] = []
    for index, offer in enumerate(offers):
        method, intent = key(offer)
        q = weight_for(ranges, method, intent)
        if q:
            weighted.append((-q, index, offer))
    if not weighted:
        return list(offers) if all_when_none_match else []
    weighted.sort(key=lambda t: (t[0], t[1]))
    return [offer for _, _, offer in weighted]
