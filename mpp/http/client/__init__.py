"""The paying side of mpp.http: `PaymentAuth`, an httpx.Auth for httpx.Client and
httpx.AsyncClient (and SDKs built on them, such as openai).

Where things are: the one auth flow (choose, check, sign, retry) in auth.py; what a paid stream
does with the events it reads (strip them, record receipts, vouchers ahead, need-voucher
answers) in stream.py; the vouchers and topUps sent on their own requests in management.py; the
per-route challenge cache in routes.py; the per-channel lookahead windows in windows.py. The
decisions themselves (budget, window, what to sign) are pure functions in mpp.session.
"""

from mpp.http.client.auth import PaymentAuth
from mpp.http.client.exchange import RECEIPTS_KEY, PaidExchange, PaymentDeclined

__all__ = ["RECEIPTS_KEY", "PaidExchange", "PaymentAuth", "PaymentDeclined"]
