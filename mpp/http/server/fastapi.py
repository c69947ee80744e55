"""FastAPI / Starlette helpers (import only where starlette is installed).

`meter: Meter = Depends(payment_meter)` gives a route handler its request's Meter.
"""

from __future__ import annotations

from starlette.requests import Request

from mpp.http.server.meter import Meter, get_meter


def payment_meter(request: Request) -> Meter:
    """The Meter of this request (a no-op Meter when the request is not paid)."""
    return get_meter(request)
