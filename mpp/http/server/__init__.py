"""The Payment scheme's session intent on the server side of HTTP.

What is where:

- `gate.py`: what happens when a credential (a voucher) arrives: route prices → challenges,
  parse and bind (no I/O), then the session engine (`PaymentGate`); `routes.py`: what it is
  configured with and sees of a request (`Price`, `Route`, `RequestInfo`); `answers.py`: what
  it answers itself (`Answer`: 402 and other problems, management 200s, the receipt header).
- `meter.py`: the paid response's state machine (`Meter`, `Phase`): charges, need-voucher
  pauses, the final receipt.
- `asgi.py`: `PaymentMiddleware`, the ASGI adapter over the gate and the meter.
- `body.py`: reading and replaying a request body; `idempotency.py`: `Idempotency-Key`
  (CORE-47/SES-29); `lanes.py`: where engine work runs; `ratelimit.py`: the failure rate
  limit (SES-42); `waiters.py`: streams waiting for a voucher.
- `uvicorn_guard.py` (read timeouts) and `fastapi.py` (`Depends(payment_meter)`) load uvicorn
  and starlette, so they are not imported here: import them by their module paths.
"""

from __future__ import annotations

from mpp.http.server.answers import Answer
from mpp.http.server.asgi import PaymentMiddleware
from mpp.http.server.gate import PaymentGate
from mpp.http.server.meter import Meter, Phase, get_meter
from mpp.http.server.routes import ChargeOptions, Price, RequestInfo, Route
from mpp.http.server.waiters import VoucherWaiters

__all__ = [
    "Answer",
    "ChargeOptions",
    "Meter",
    "PaymentGate",
    "PaymentMiddleware",
    "Phase",
    "Price",
    "RequestInfo",
    "Route",
    "VoucherWaiters",
    "get_meter",
]
