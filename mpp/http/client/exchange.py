"""The client's small data types: one paid exchange, what a paid stream needs from the client
that paid for it (`Paying`), and helpers that read a server's answers (problem bodies and their
amounts, Retry-After)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from mpp.core.amounts import decimal_amount, decimal_seconds
from mpp.core.challenge import Challenge
from mpp.core.errors import PaymentError
from mpp.core.receipt import parse_receipt
from mpp.core.rfc3339 import parse_rfc3339
from mpp.session.budget import StreamBudget
from mpp.session.window import LeadWindow

PAID_RETRY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
RECEIPTS_KEY = "mpp.receipts"
RouteKey = tuple[str, str, str]  # (origin, path, method): mpp.http.client.routes

log = logging.getLogger(__name__)


class PaymentDeclined(PaymentError):
    """The client will not pay this challenge (nothing was signed or sent)."""

    status = 402
    problem = "payment-required"
    title = "Payment declined by the client"


class Paying(Protocol):
    """What a paid stream asks of the client that paid for it (`PaymentAuth`). Every method may
    block (signing, the payer's records, HTTP, the chain): streams call them in worker
    threads."""

    timeout: float
    prepay_units: int | None
    topup_amount: int | None

    def deposit_of(self, channel_id: str) -> int | None: ...

    def send_voucher(self, ex: PaidExchange, channel_id: str, cumulative: int) -> None: ...

    def topup(self, ex: PaidExchange, channel_id: str, additional: int) -> None: ...

    def remember_receipt(self, receipt: dict[str, Any]) -> None: ...


@dataclass
class PaidExchange:
    """One paid request: its challenge and channel, and the receipts it got."""

    paying: Paying
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
        self.paying.remember_receipt(receipt)

    def add_receipt_header(self, response: httpx.Response) -> None:
        """The response's `Payment-Receipt`, when it has a valid one (a malformed one is
        logged and ignored: the payment already happened)."""
        header = response.headers.get("payment-receipt")
        if not header:
            return
        try:
            self.add_receipt(parse_receipt(header).to_json())
        except PaymentError:
            log.warning("ignored a malformed Payment-Receipt header")


def problem_of(response: httpx.Response) -> dict[str, Any]:
    try:
        data = json.loads(response.content) if response.content else {}
    except (ValueError, RuntimeError):  # RuntimeError: not read (httpx and httpx2 alike)
        return {}
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class ProblemAmounts:
    """The amounts a payment problem body may carry (SES-27), read once with the one amount
    parser: None when absent or not an ASCII decimal string."""

    spent: int | None = None
    accepted_cumulative: int | None = None
    required_topup: int | None = None

    @classmethod
    def of(cls, response: httpx.Response) -> ProblemAmounts:
        problem = problem_of(response)
        return cls(
            decimal_amount(problem.get("spent")),
            decimal_amount(problem.get("acceptedCumulative")),
            decimal_amount(problem.get("requiredTopUp")),
        )


def unix_expires(expires: str | None) -> int | None:
    return None if expires is None else int(parse_rfc3339(expires).timestamp())


def superseded(payload: Mapping[str, Any], response: httpx.Response) -> bool:
    """A stale-voucher 402 for a voucher another of ours already overtook (pipelined prepay
    vouchers travel on several connections and may land out of order): nothing to do."""
    if response.status_code != 402 or payload.get("action") != "voucher":
        return False
    accepted = ProblemAmounts.of(response).accepted_cumulative
    cumulative = decimal_amount(payload.get("cumulativeAmount"))
    return accepted is not None and cumulative is not None and accepted >= cumulative


def retry_after(response: httpx.Response, cap: float = 5.0) -> float:
    seconds = decimal_seconds(response.headers.get("retry-after", "1"))
    return 1.0 if seconds is None else min(cap, float(seconds))
