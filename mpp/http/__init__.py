"""HTTP adapters for the Payment scheme's session intent.

Client: `PaymentAuth` (an httpx.Auth for httpx.Client and httpx.AsyncClient, also usable under
the openai SDK). Server: `PaymentGate` (framework-neutral) and `PaymentMiddleware` (ASGI:
standalone, Starlette, FastAPI) with `get_meter(request).charge(units)` for metered streams.
"""

from mpp.http.asgi import PaymentMiddleware
from mpp.http.client_auth import PaymentAuth
from mpp.http.client_model import RECEIPTS_KEY, PaidExchange, PaymentDeclined
from mpp.http.meter import Meter, Phase, get_meter
from mpp.http.server_core import Answer, PaymentGate, Price, RequestInfo, Route
from mpp.http.sse import (
    NEED_VOUCHER,
    RECEIPT,
    PaymentEvent,
    PaymentEventFilter,
    format_event,
    is_event_stream,
)
from mpp.http.waiters import VoucherWaiters

__all__ = [
    "NEED_VOUCHER",
    "RECEIPT",
    "RECEIPTS_KEY",
    "Answer",
    "Meter",
    "PaidExchange",
    "PaymentAuth",
    "PaymentDeclined",
    "PaymentEvent",
    "PaymentEventFilter",
    "PaymentGate",
    "PaymentMiddleware",
    "Phase",
    "Price",
    "RequestInfo",
    "Route",
    "VoucherWaiters",
    "format_event",
    "get_meter",
    "is_event_stream",
]
