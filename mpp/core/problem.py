"""RFC 9457 problem details and the pieces of a 402/4xx answer (CORE-28..31, CORE-34, AMB-04/06).

Sans-I/O: these functions return status, header pairs and body bytes; the HTTP layer sends them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from mpp.core import errors
from mpp.core.challenge import Challenge
from mpp.core.errors import PROBLEM_BASE, PaymentError
from mpp.core.http import NO_STORE

PROBLEM_CONTENT_TYPE: Final = "application/problem+json"

# One canonical class per problem type, for clients decoding a problem body.
PROBLEM_TYPES: Final[Mapping[str, type[PaymentError]]] = {
    cls.problem: cls
    for cls in (
        errors.PaymentRequired,
        errors.PaymentInsufficient,
        errors.PaymentExpired,
        errors.VerificationFailed,
        errors.MethodUnsupported,
        errors.MalformedCredential,
        errors.InvalidChallenge,
        errors.RateLimited,
        errors.InvalidSignature,
        errors.SignerMismatch,
        errors.AmountExceedsDeposit,
        errors.DeltaTooSmall,
        errors.ChallengeNotFound,
        errors.InsufficientBalance,
        errors.ChannelNotFound,
        errors.ChannelFinalized,
        errors.TransactionReverted,
        errors.ChainUnavailable,
    )
}


def problem_body(error: PaymentError, instance: str | None = None) -> bytes:
    """The `application/problem+json` body for `error` (CORE-29: details never in headers)."""
    return json.dumps(error.to_problem(instance), separators=(",", ":"), default=str).encode()


def error_from_problem(body: bytes | str | Mapping[str, Any]) -> PaymentError:
    """Decode a problem body into our exception (unknown types → the PaymentError base)."""
    data: Any = body
    if not isinstance(body, Mapping):
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            data = {}
    if not isinstance(data, Mapping):
        data = {}
    type_uri = data.get("type")
    detail = data.get("detail")
    cls: type[PaymentError] = PaymentError
    if isinstance(type_uri, str) and type_uri.startswith(PROBLEM_BASE):
        cls = PROBLEM_TYPES.get(type_uri[len(PROBLEM_BASE) :], PaymentError)
    return cls(detail if isinstance(detail, str) else "")


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def error_response(
    error: PaymentError,
    challenges: Sequence[Challenge] = (),
    *,
    retry_after: int | None = None,
    instance: str | None = None,
) -> ErrorResponse:
    """Status, headers and body for a payment error.

    402 always carries at least one Payment challenge (CORE-29) and `Cache-Control: no-store`
    (CORE-34); answers without a fresh challenge (400/403/431, CORE-24/28/40) carry none.
    Never a Payment-Receipt (CORE-33).
    """
    headers: list[tuple[str, str]] = []
    if error.status == 402:
        if not challenges:
            raise ValueError("a 402 needs at least one Payment challenge (CORE-29)")
        headers.extend(("WWW-Authenticate", c.to_header()) for c in challenges)
    elif error.fresh_challenge and challenges:
        headers.extend(("WWW-Authenticate", c.to_header()) for c in challenges)  # AMB-04: 410
    if headers:
        headers.append(("Cache-Control", NO_STORE))  # any answer carrying a challenge
    if retry_after is not None and error.status in (402, 429, 503):
        headers.append(("Retry-After", str(int(retry_after))))  # CORE-31
    headers.append(("Content-Type", PROBLEM_CONTENT_TYPE))
    return ErrorResponse(error.status, tuple(headers), problem_body(error, instance))


def payment_required(
    challenges: Sequence[Challenge], *, detail: str = "", retry_after: int | None = None
) -> ErrorResponse:
    """The plain 402 for a request without a credential."""
    return error_response(errors.PaymentRequired(detail), challenges, retry_after=retry_after)


def challenge_headers(challenges: Iterable[Challenge]) -> list[tuple[str, str]]:
    return [("WWW-Authenticate", c.to_header()) for c in challenges]
