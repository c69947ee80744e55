"""The answers the payment server sends itself, without calling the handler, and the receipt
header every paid 2xx carries.

402 challenges and the other payment problems (RFC 9457, mpp.core.problem), non-payment
problems (`about:blank`: idempotency conflicts, our own failures) and the 200 of a management
request (AMB-15). None of them may be retried by a library on its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mpp.core.http import NO_STORE, receipt_cache_control
from mpp.core.problem import PROBLEM_CONTENT_TYPE, ErrorResponse
from mpp.core.receipt import Receipt

__all__ = [
    "BALANCE_HEADER",
    "COST_HEADER",
    "Answer",
    "management_answer",
    "money_headers",
    "payment_problem",
    "plain_problem",
    "receipt_header",
]


@dataclass(frozen=True)
class Answer:
    """A response the gate sends itself (402/400/403/410/429, or a management 200)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""


COST_HEADER = "x-mpp-cost"
BALANCE_HEADER = "x-mpp-balance"


def money_headers(receipt: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The receipt's `cost` and `balance` (base units) as plain headers, for clients and tools
    that do not decode `Payment-Receipt`. On an event stream they tell what was paid when the
    response started; its final receipt event has the totals."""
    named = ((COST_HEADER, "cost"), (BALANCE_HEADER, "balance"))
    return [(header, str(receipt[field])) for header, field in named if field in receipt]


def receipt_header(receipt: Mapping[str, Any]) -> str:
    """The `Payment-Receipt` header of a session receipt (CORE-32/35)."""
    core = {"status", "method", "timestamp", "reference"}
    fields = {k: v for k, v in receipt.items() if k not in core}
    return Receipt(
        method=str(receipt["method"]),
        reference=str(receipt["reference"]),
        timestamp=str(receipt["timestamp"]),
        fields=fields,
    ).to_header()


def management_answer(receipt: Mapping[str, Any]) -> Answer:
    """AMB-15: 200, empty body, receipt (CORE-32/35); never reaches the handler."""
    headers = (
        ("payment-receipt", receipt_header(receipt)),
        ("cache-control", receipt_cache_control(None)),
        ("content-length", "0"),
    )
    return Answer(200, headers)


def payment_problem(resp: ErrorResponse) -> Answer:
    """A payment problem (402 with its challenges, 400, 403, 410, 429, 503)."""
    headers = [(k.lower(), v) for k, v in resp.headers]
    # The openai SDK (and similar) auto-retries 408/409/429/5xx: a paid retry must be the
    # caller's decision, never a library's.
    headers.append(("x-should-retry", "false"))
    if resp.status == 402 and not any(k == "cache-control" for k, _ in headers):
        headers.append(("cache-control", NO_STORE))  # CORE-34
    headers.append(("content-length", str(len(resp.body))))
    return Answer(resp.status, tuple(headers), resp.body)


def plain_problem(
    status: int, detail: str, instance: str, *, retry_after: int | None = None
) -> Answer:
    """A non-payment problem (RFC 9457 `about:blank`): idempotency conflicts (409/422), our own
    failures (500)."""
    title = {409: "Conflict", 422: "Unprocessable Content", 500: "Internal Server Error"}[status]
    body = json.dumps(
        {"type": "about:blank", "title": title, "status": status, "detail": detail,
         "instance": instance},
        separators=(",", ":"),
    ).encode()  # fmt: skip
    headers = [("content-type", PROBLEM_CONTENT_TYPE), ("cache-control", NO_STORE)]
    if retry_after is not None:
        headers.append(("retry-after", str(retry_after)))
    headers.append(("content-length", str(len(body))))
    return Answer(status, tuple(headers), body)
