"""Paying a tempo/charge challenge (mpp.charge): one on-chain transfer per request.

`PaymentAuth` pays a charge when it is the best offer of a 402 it can pay (`Accept-Payment`
order; by default a session is preferred where both are offered: it needs no transaction per
request). Before signing: TLS (CORE-42), the body digest (CORE-13), and the payer's policy, whose
`max_amount_per_unit` is the per-request cap here (the request is the unit). The credential goes
on the retry; the receipt of a 2xx is kept like a session's (not in the channel records).
`charge_mode="push"` broadcasts the transfer itself and sends its hash (when the challenge allows
it and the server does not sponsor fees); the default "pull" lets the server broadcast it.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from mpp.charge.payer import ChargePayer
from mpp.charge.server import ChargeChain
from mpp.charge.terms import ChargeTerms
from mpp.core.challenge import Challenge
from mpp.core.credential import Credential
from mpp.core.digest import check_content_digest
from mpp.core.errors import PaymentError
from mpp.core.http import require_secure_url
from mpp.core.receipt import parse_receipt
from mpp.http.client.exchange import PAID_RETRY_METHODS, PaymentDeclined, unix_expires
from mpp.session.payer import Payer
from mpp.session.terms import TermsError

__all__ = ["ChargeClient"]


class ChargeClient:
    def __init__(self, payer: Payer, *, allow_insecure: bool, mode: str = "pull") -> None:
        if mode not in ("pull", "push"):
            raise ValueError("charge_mode must be pull or push")
        self._mode = mode
        chain = payer.chain
        broadcast = chain.send_raw_transaction if isinstance(chain, ChargeChain) else None
        self.payer = ChargePayer(
            payer, max_amount=payer.policy.max_amount_per_unit, broadcast=broadcast
        )
        self._allow_insecure = allow_insecure

    def attach(self, request: httpx.Request, challenge: Challenge) -> None:
        """Sign what pays `challenge` and put the credential on `request` (raises
        PaymentDeclined or PolicyViolation with nothing signed)."""
        try:
            terms = ChargeTerms.from_request(challenge.request)
        except TermsError as exc:
            raise PaymentDeclined(f"the charge request is not payable: {exc}") from None
        require_secure_url(str(request.url), self._allow_insecure)  # CORE-42
        if challenge.digest is not None and not check_content_digest(
            challenge.digest, request.content
        ):
            raise PaymentDeclined("challenge digest does not match this request's body")
        payload = self.payer.payload(
            terms,
            challenge_id=challenge.id,
            expires=unix_expires(challenge.expires),
            realm=challenge.realm,
            mode=self._mode,
        )
        credential = Credential(challenge, payload, source=self.payer.did(terms))
        request.headers["Authorization"] = credential.to_header()
        if request.method in PAID_RETRY_METHODS and "idempotency-key" not in request.headers:
            request.headers["Idempotency-Key"] = str(uuid.uuid4())

    @staticmethod
    def receipt(response: httpx.Response) -> dict[str, Any] | None:
        header = response.headers.get("payment-receipt")
        if not header:
            return None
        try:
            return parse_receipt(header).to_json()
        except PaymentError:
            return None
