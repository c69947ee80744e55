"""HTTP adapters for the Payment scheme's session intent.

Client: `PaymentAuth` (an httpx.Auth for httpx.Client and httpx.AsyncClient, also usable under
the openai SDK). Server: `PaymentGate` (framework-neutral) and `PaymentMiddleware` (ASGI:
standalone, Starlette, FastAPI) with `get_meter(request).charge(units)` for metered streams.
"""

from mpp.http.client import RECEIPTS_KEY, PaidExchange, PaymentAuth, PaymentDeclined
from mpp.http.server import (
    Answer,
    Meter,
    PaymentGate,
    PaymentMiddleware,
    Phase,
    Price,
    RequestInfo,
    Route,
    VoucherWaiters,
    get_meter,
)
from mpp.http.sse import (
    NEED_VOUCHER,
    RECEIPT,
    PaymentEvent,
    PaymentEventFilter,
    format_event,
    is_event_stream,
)

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
