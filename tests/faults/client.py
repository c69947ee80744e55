"""A deliberately simple paying client for fault runs, with exact bookkeeping.

It pays one channel (opened on chain by the payer beforehand) with voucher credentials: the
first request carries its current cumulative, every `payment-need-voucher` event is answered
with a bodyless voucher POST for exactly `requiredCumulative`, every `data:` event is a delivered
token. Connection errors (a killed server) end the current attempt; `run()` waits for the server
and requests the remaining tokens. The close signs the `spent` of the last receipt, re-signing
once at the server's `spent` when the server says it is higher (AMB-02). `open_via_server`
opens the channel through the server instead (an `open` credential on a zero-token request,
retried across crashes with the same signed transaction).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from mpp.core import Challenge, Credential, parse_challenge, parse_receipt
from mpp.session.voucher import sign_voucher


class ServerGone(Exception):
    """The server did not answer (killed, restarting, refusing)."""


@dataclass
class FaultClient:
    url: str
    key: str
    payer: str
    channel_id: str
    escrow: str
    chain_id: int
    price: int
    cumulative: int = 0  # highest voucher signed
    delivered: int = 0  # tokens received
    cut: int = 0  # streams that had started and were then cut by a connection error
    receipts: list[dict[str, Any]] = field(default_factory=list)
    challenge: Challenge | None = None
    timeout: float = 10.0

    @property
    def source(self) -> str:
        return f"did:pkh:eip155:{self.chain_id}:{self.payer.lower()}"

    # --- credentials ---------------------------------------------------------------------------

    def _fetch_challenge(self) -> Challenge:
        try:
            answer = httpx.head(self.url, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise ServerGone(str(exc)) from None
        if answer.status_code != 402:
            raise ServerGone(f"HEAD answered {answer.status_code}")
        self.challenge = parse_challenge(answer.headers.get_list("www-authenticate"))
        return self.challenge

    def _credential(self, action: str, amount: int) -> str:
        challenge = self.challenge or self._fetch_challenge()
        sig = sign_voucher(
            self.key, self.channel_id, amount, chain_id=self.chain_id, escrow=self.escrow
        )
        payload = {
            "action": action,
            "channelId": self.channel_id,
            "cumulativeAmount": str(amount),
            "signature": sig,
        }
        return Credential(challenge, payload, source=self.source).to_header()

    def _voucher(self, required: int) -> None:
        self.cumulative = max(self.cumulative, required)
        auth = self._credential("voucher", self.cumulative)
        try:
            answer = httpx.post(
                self.url,
                headers={"authorization": auth, "accept": "text/event-stream"},
                timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
            raise ServerGone(str(exc)) from None
        if answer.status_code >= 500:
            raise ServerGone(f"voucher answered {answer.status_code}")
        if answer.status_code != 200:
            raise AssertionError(f"voucher refused: {answer.status_code} {answer.text[:300]}")

    def open_via_server(self, payload: dict[str, Any], *, deadline: float) -> None:
        """POST the `open` credential until the server has stored the channel. A retry after a
        crash carries the same transaction: the server adopts an open that already landed."""
        while True:
            if time.monotonic() > deadline:
                raise AssertionError("open did not complete in time")
            try:
                challenge = self.challenge or self._fetch_challenge()
                auth = Credential(challenge, payload, source=self.source).to_header()
                # A zero-token request: the open is answered without content to pay for.
                answer = httpx.post(f"{self.url}?n=0", headers={"authorization": auth}, timeout=30)
            except (httpx.HTTPError, ServerGone):
                time.sleep(0.2)
                continue
            if answer.status_code == 200:
                self.cumulative = max(self.cumulative, int(payload["cumulativeAmount"]))
                self._receipt(answer.headers.get("payment-receipt"))
                return
            if answer.status_code in (402, 503):  # a stale challenge, or the chain is slow
                self.challenge = None
                time.sleep(0.2)
                continue
            raise AssertionError(f"open answered {answer.status_code}: {answer.text[:300]}")

    # --- streaming -----------------------------------------------------------------------------

    def stream_once(self, count: int, *, stop_after: int | None = None) -> int:
        """One request for `count` tokens; returns the tokens received. ServerGone on a cut."""
        if self.cumulative == 0:
            self.cumulative = self.price
        auth = self._credential("voucher", self.cumulative)
        got = 0
        started = False
        try:
            with httpx.stream(
                "GET",
                f"{self.url}?n={count}",
                headers={"authorization": auth, "accept": "text/event-stream"},
                timeout=httpx.Timeout(self.timeout, read=30.0),
            ) as response:
                if response.status_code == 402:  # e.g. a challenge we should refresh
                    self.challenge = None
                    response.read()
                    raise ServerGone(f"402: {response.text[:200]}")
                if response.status_code != 200:
                    response.read()
                    raise AssertionError(f"stream answered {response.status_code}")
                started = True
                self._receipt(response.headers.get("payment-receipt"))
                event = None
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        data = line[6:]
                        if event == "payment-need-voucher":
                            self._voucher(int(json.loads(data)["requiredCumulative"]))
                        elif event == "payment-receipt":
                            self.receipts.append(json.loads(data))
                        else:
                            got += 1
                            self.delivered += 1
                            if stop_after is not None and got >= stop_after:
                                return got  # leaving the block closes the connection
                    elif line == "":
                        event = None
        except (httpx.HTTPError, ServerGone) as exc:
            self.cut += started
            raise ServerGone(str(exc)) from None
        return got

    def run(self, total: int, *, deadline: float) -> None:
        """Receive `total` tokens across as many attempts as crashes make necessary."""
        target = self.delivered + total
        while self.delivered < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"client gave up {target - self.delivered} tokens short")
            try:
                self.stream_once(target - self.delivered)
            except ServerGone:
                time.sleep(0.2)

    def _receipt(self, header: str | None) -> None:
        if header:
            r = parse_receipt(header)
            self.receipts.append({**r.fields, "spent": r.fields.get("spent")})

    @property
    def last_spent(self) -> int:
        return max((int(r["spent"]) for r in self.receipts if r.get("spent")), default=0)

    # --- close ---------------------------------------------------------------------------------

    def close(self, *, deadline: float) -> dict[str, Any]:
        """Cooperative close at the last receipt's `spent` (re-signed once if the server asks)."""
        amount = self.last_spent
        resigned = False
        while True:
            if time.monotonic() > deadline:
                raise AssertionError("close did not complete in time")
            try:
                auth = self._credential("close", amount)
                answer = httpx.post(self.url, headers={"authorization": auth}, timeout=30.0)
            except (httpx.HTTPError, ServerGone):
                time.sleep(0.2)
                continue
            if answer.status_code == 200:
                receipt = parse_receipt(answer.headers["payment-receipt"])
                return {**receipt.fields, "reference": receipt.reference}
            problem = answer.json() if answer.content else {}
            if answer.status_code == 402 and "spent" in problem and not resigned:
                amount, resigned = int(problem["spent"]), True
                continue
            if answer.status_code in (402, 503):
                self.challenge = None
                time.sleep(0.2)
                continue
            if answer.status_code == 410:  # the close landed before a crash: nothing left
                return {"status": "closed"}
            raise AssertionError(f"close answered {answer.status_code}: {problem}")
