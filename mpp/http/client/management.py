"""Management requests: vouchers and topUps a paid stream sends on their own requests to the
URI it pays for (SES-34), while the stream's own response keeps flowing.

Blocking by design: paid streams (mpp.http.client.stream) call these from worker threads, for
sync and async clients alike, over one shared httpx.Client. A challenge about to expire is
refreshed with `HEAD` first (AMB-05); a 429 is retried once at the server's pace (SES-42); a 402
with a fresh challenge (expired or rotated meanwhile) is answered once more, re-signed; a
stale-voucher 402 for a voucher another of ours already overtook is nothing to do.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from mpp.core.credential import Credential
from mpp.http.client.exchange import PaidExchange, retry_after, superseded, unix_expires
from mpp.http.client.routes import choose_challenge
from mpp.session.payer import Payer

__all__ = ["ManagementRequests"]

log = logging.getLogger(__name__)

STALE_MARGIN = 30.0  # seconds before `expires` when a challenge is refreshed first


class ManagementRequests:
    def __init__(
        self,
        payer: Payer,
        lock: threading.Lock,
        *,
        accept_payment: str,
        voucher_method: str,
        timeout: float,
    ) -> None:
        self._payer = payer
        self._lock = lock  # the client's lock around the payer's records
        self._accept_payment = accept_payment
        self._voucher_method = voucher_method
        self._timeout = timeout
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()

    def voucher(self, ex: PaidExchange, cid: str, cumulative: int) -> None:
        def build() -> dict[str, Any]:
            with self._lock:
                return self._payer.voucher_payload(cid, cumulative)

        self._send(ex, build)

    def topup(self, ex: PaidExchange, cid: str, additional: int) -> None:
        """On-chain topUp through the server (SES-17), then the payer's deposit is raised."""

        def build() -> dict[str, Any]:
            expires = unix_expires(ex.challenge.expires)
            return self._payer.topup_payload(cid, additional, expires=expires)

        self._send(ex, build)
        with self._lock:
            self._payer.confirm_topup(cid, additional)

    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _http(self) -> httpx.Client:
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self._timeout)
            return self._client

    def _send(self, ex: PaidExchange, build: Callable[[], dict[str, Any]]) -> None:
        client = self._http()
        expires = unix_expires(ex.challenge.expires)
        if expires is not None and expires - time.time() < STALE_MARGIN:
            self._take_challenge(ex, client.head(ex.url))
        payload = build()
        response = client.send(self._request(ex, payload))
        if response.status_code == 429:  # SES-42: the server's pace, then once more
            time.sleep(retry_after(response))
            response = client.send(self._request(ex, payload))
        if superseded(payload, response):
            return
        if self._take_challenge(ex, response):  # expired meanwhile: once more, re-signed
            response = client.send(self._request(ex, build()))
        self._check(ex, response)

    def _request(self, ex: PaidExchange, payload: dict[str, Any]) -> httpx.Request:
        credential = Credential(ex.challenge, payload, source=ex.source)
        headers = {"Authorization": credential.to_header(), "Accept-Payment": self._accept_payment}
        method = self._voucher_method if payload.get("action") == "voucher" else "POST"
        return httpx.Request(method, ex.url, headers=headers)

    def _take_challenge(self, ex: PaidExchange, response: httpx.Response) -> bool:
        """A 402 carries a fresh challenge (AMB-05: HEAD refreshes); use it from now on."""
        if response.status_code != 402:
            return False
        chosen = choose_challenge(response, self._accept_payment)
        if chosen is not None:
            ex.challenge = chosen[0]
        return chosen is not None

    def _check(self, ex: PaidExchange, response: httpx.Response) -> None:
        if not 200 <= response.status_code < 300:  # AMB-15: any 2xx is success
            raise httpx.HTTPStatusError(
                f"payment management request failed with {response.status_code}",
                request=response.request,
                response=response,
            )
        ex.add_receipt_header(response)
