"""Bad and edge-case credentials against a real server (Starlette app on uvicorn).

Rows: CORE-20 (challenge from another route), CORE-24 (two credentials → 400), CORE-25
(malformed → 402 + fresh challenge), CORE-28 (policy → 403, no challenge), CORE-33 (no receipt
on errors), CORE-47/SES-29 (Idempotency-Key replay), SES-22 (stale voucher), SES-12 (forged),
SES-24 (over deposit), AMB-05 (expired challenge → session/challenge-not-found), SES-34 (HEAD
voucher top-up), SES-42 (rate limit → 429 + Retry-After), CORE-42/CORE-39 (client refusals).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from mpp.core.challenge import Challenge, parse_challenges
from mpp.core.credential import Credential
from mpp.core.errors import InsecureTransport
from mpp.core.receipt import parse_receipt
from mpp.http import RECEIPTS_KEY, PaymentAuth
from mpp.session.policy import PolicyViolation, SpendingPolicy
from mpp.session.terms import SessionTerms
from mpp.session.voucher import sign_voucher
from tests.http.support import Counters, Env, ServerThread, starlette_app

P = "https://paymentauth.org/problems/"


class Harness:
    def __init__(self, env: Env, **gate_kw: Any) -> None:
        self.env = env
        self.counters = Counters()
        self.server = ServerThread(starlette_app(env.gate(**gate_kw), self.counters)).start()
        self.payer = env.payer_for()
        self.auth = PaymentAuth(self.payer, allow_insecure=True, deposit=5_000)
        self.url = self.server.url

    def open_channel(self) -> str:
        """Pay once through the client: a channel with one /fixed request spent."""
        with httpx.Client(auth=self.auth) as client:
            r = client.get(self.url + "/fixed")
        assert r.status_code == 200
        return str(r.extensions[RECEIPTS_KEY][-1]["channelId"])

    def challenge(self, path: str = "/fixed", method: str = "GET", **kw: Any) -> Challenge:
        r = httpx.request(method, self.url + path, **kw)
        assert r.status_code == 402
        return parse_challenges(r.headers.get_list("www-authenticate"))[0]

    def voucher(self, cid: str, cum: int, key: str | None = None) -> dict[str, str]:
        sig = sign_voucher(
            key or self.env.payer_key,
            cid,
            cum,
            chain_id=self.env.devnet.chain_id,
            escrow=self.env.devnet.escrow,
        )
        return {
            "action": "voucher",
            "channelId": cid,
            "cumulativeAmount": str(cum),
            "signature": sig,
        }

    def send(
        self, method: str, path: str, challenge: Challenge, payload: dict[str, Any], **kw: Any
    ) -> httpx.Response:
        headers = kw.pop("headers", {})
        headers["Authorization"] = Credential(challenge, payload).to_header()
        return httpx.request(method, self.url + path, headers=headers, **kw)


@pytest.fixture
def h(env: Env) -> Iterator[Harness]:
    harness = Harness(env)
    try:
        yield harness
    finally:
        harness.server.stop()


def _type(r: httpx.Response) -> str:
    assert "payment-receipt" not in r.headers  # CORE-33
    return str(json.loads(r.content)["type"])


def test_ses_22_24_12_stale_over_deposit_and_forged_vouchers(h: Harness) -> None:
    cid = h.open_channel()
    ch = h.challenge()
    ok = h.send("GET", "/fixed", ch, h.voucher(cid, 3_000))
    assert ok.status_code == 200
    stale = h.send("GET", "/fixed", ch, h.voucher(cid, 2_000))
    assert stale.status_code == 402 and _type(stale) == P + "verification-failed"
    assert stale.headers["cache-control"] == "no-store" and "www-authenticate" in stale.headers
    over = h.send("GET", "/fixed", ch, h.voucher(cid, 5_001))
    assert over.status_code == 402 and _type(over) == P + "session/amount-exceeds-deposit"
    forged = h.send("GET", "/fixed", ch, h.voucher(cid, 4_000, key=h.env.payee_key))
    assert forged.status_code == 402
    assert _type(forged) in (P + "session/invalid-signature", P + "session/signer-mismatch")
    assert h.counters.calls["/fixed"] == 2  # only the two paid requests reached the handler


def test_amb_05_expired_challenge_and_core_20_other_route(h: Harness) -> None:
    cid = h.open_channel()
    issuer = h.env.issuer()
    past = datetime.now(UTC) - timedelta(minutes=10)
    expired = issuer.issue(
        method="tempo", intent="session", request=h.challenge().request, now=past
    )
    r = h.send("GET", "/fixed", expired, h.voucher(cid, 2_000))
    assert r.status_code == 402 and _type(r) == P + "session/challenge-not-found"
    cheap = h.challenge("/cheap")
    r = h.send("GET", "/fixed", cheap, h.voucher(cid, 2_000))
    assert r.status_code == 402 and _type(r) == P + "invalid-challenge"  # CORE-20
    assert h.counters.calls["/fixed"] == 1


def test_core_24_two_credentials_and_core_25_malformed(h: Harness) -> None:
    cid = h.open_channel()
    cred = Credential(h.challenge(), h.voucher(cid, 2_000)).to_header()
    two = httpx.get(h.url + "/fixed", headers=[("Authorization", cred), ("Authorization", cred)])
    assert two.status_code == 400 and "www-authenticate" not in two.headers
    assert _type(two) == P + "malformed-credential"
    bad = httpx.get(h.url + "/fixed", headers={"Authorization": "Payment !!!"})
    assert bad.status_code == 402 and _type(bad) == P + "malformed-credential"
    assert parse_challenges(bad.headers.get_list("www-authenticate"))  # fresh challenge
    unknown = h.send("GET", "/fixed", h.challenge(), {"action": "foo", "channelId": cid})
    assert unknown.status_code == 402 and _type(unknown) == P + "malformed-credential"  # SES-41


def test_core_13_digest_bound_body(h: Harness) -> None:
    cid = h.open_channel()
    ch = h.challenge("/fixed", "POST", content=b'{"hello": "world"}')
    assert ch.digest == "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
    ok = h.send("POST", "/fixed", ch, h.voucher(cid, 2_000), content=b'{"hello": "world"}')
    assert ok.status_code == 200
    flipped = h.send("POST", "/fixed", ch, h.voucher(cid, 3_000), content=b'{"hello": "World"}')
    assert flipped.status_code == 402 and _type(flipped) == P + "verification-failed"


def test_ses_34_head_voucher_tops_up_balance(h: Harness) -> None:
    cid = h.open_channel()
    ch = h.challenge()
    r = h.send("HEAD", "/fixed", ch, h.voucher(cid, 4_000))
    assert r.status_code == 200 and r.content == b""  # AMB-15
    receipt = parse_receipt(r.headers["payment-receipt"]).to_json()
    assert receipt["acceptedCumulative"] == "4000" and receipt["spent"] == "1000"
    assert "private" in r.headers["cache-control"]
    post = h.send("POST", "/fixed", ch, h.voucher(cid, 4_500))  # bodyless POST: management
    assert post.status_code == 200 and h.counters.calls["/fixed"] == 1  # handler not called
    again = h.send("GET", "/fixed", ch, h.voucher(cid, 4_500))  # the balance pays
    assert again.status_code == 200
    assert parse_receipt(again.headers["payment-receipt"]).to_json()["spent"] == "2000"


@pytest.mark.parametrize("method", ["POST", "HEAD"])
def test_amb_15_bodyless_open_then_close_are_management(h: Harness, method: str) -> None:
    """AMB-15: an `open` credential on a bodyless POST or a HEAD opens the channel and answers
    200 with an empty body and a receipt (no handler call, no 500, no wait for a voucher); a
    bodyless close then closes it the same way."""
    ch = h.challenge()
    payer = h.env.payer_for(name=f"open-{method}.db")
    payload = payer.open_payload(SessionTerms.from_request(ch.request), 10_000)
    r = h.send(method, "/fixed", ch, payload)
    assert r.status_code == 200 and r.content == b""
    receipt = parse_receipt(r.headers["payment-receipt"]).to_json()
    assert receipt["channelId"] == payload["channelId"] and receipt["spent"] == "0"
    assert h.counters.calls.get("/fixed") is None
    state = h.env.engine().store.get(payload["channelId"])
    assert state is not None and state.deposit == 10_000
    close = h.send(method, "/fixed", h.challenge(), payer.close_payload(payload["channelId"], 0))
    assert close.status_code == 200 and close.content == b""
    final = h.env.engine().store.get(payload["channelId"])
    assert final is not None and final.finalized and final.settled == 0


def test_core_47_ses_29_idempotent_replay(h: Harness) -> None:
    cid = h.open_channel()
    ch = h.challenge("/fixed", "POST", content=b"{}")
    payload = h.voucher(cid, 3_000)
    headers = {"Idempotency-Key": "k-1"}
    first = h.send("POST", "/fixed", ch, payload, content=b"{}", headers=dict(headers))
    second = h.send("POST", "/fixed", ch, payload, content=b"{}", headers=dict(headers))
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    assert first.headers["payment-receipt"] == second.headers["payment-receipt"]
    assert h.counters.calls["/fixed"] == 2  # the open request + one execution
    state = h.env.engine().store.get(cid)
    assert state is not None and state.spent == 2_000  # charged once


def test_core_28_policy_denied_is_403_without_challenge(env: Env) -> None:
    h = Harness(env, policy=lambda info, result: False)
    try:
        with httpx.Client(auth=h.auth) as client:
            r = client.get(h.url + "/fixed")
        assert r.status_code == 403 and "www-authenticate" not in r.headers
        assert "payment-receipt" not in r.headers
        assert h.counters.calls.get("/fixed") is None
    finally:
        h.server.stop()


async def test_ses_42_advancing_vouchers_are_never_rate_limited(h: Harness) -> None:
    """SES-42 as decided: 40 valid vouchers in a row, each advancing the channel, all accepted
    (the old per-channel limit of 10/s made the TypeScript client's stream die with 429)."""
    cid = h.open_channel()
    ch = h.challenge()
    creds = [Credential(ch, h.voucher(cid, 2_000 + 10 * i)).to_header() for i in range(40)]
    async with httpx.AsyncClient() as client:
        answers = [await client.head(h.url + "/fixed", headers={"Authorization": c}) for c in creds]
    assert [r.status_code for r in answers] == [200] * 40


async def test_ses_42_garbage_vouchers_for_a_live_channel_leave_its_payer_unaffected(
    h: Harness,
) -> None:
    """A stranger who read the channel id from chain floods it with vouchers signed by another
    key: past the failure rate its requests get 429 + Retry-After; the payer's own vouchers,
    sent during the flood from the same address, are all accepted."""
    cid = h.open_channel()
    ch = h.challenge()
    stranger = "0x" + "5a" * 32
    garbage = [
        Credential(ch, h.voucher(cid, 5_000 + i, key=stranger)).to_header() for i in range(40)
    ]
    valid = [Credential(ch, h.voucher(cid, 3_000 + 10 * i)).to_header() for i in range(10)]
    async with httpx.AsyncClient() as client:

        async def send(auth: str) -> httpx.Response:
            return await client.head(h.url + "/fixed", headers={"Authorization": auth})

        flood = asyncio.gather(*(send(c) for c in garbage))
        paid = [(await send(c)).status_code for c in valid]
        refused = await flood
    assert paid == [200] * 10
    statuses = [r.status_code for r in refused]
    assert 429 in statuses and 200 not in statuses
    limited = next(r for r in refused if r.status_code == 429)
    assert int(limited.headers["retry-after"]) >= 1


def test_core_42_client_refuses_plain_http_and_core_39_policy(h: Harness) -> None:
    strict = PaymentAuth(h.payer)  # no allow_insecure
    with httpx.Client(auth=strict) as client, pytest.raises(InsecureTransport):
        client.get(h.url + "/fixed")
    cheap_only = h.env.payer_for(name="p2.db", policy=SpendingPolicy(max_amount_per_unit=10))
    with httpx.Client(auth=PaymentAuth(cheap_only, allow_insecure=True)) as client:
        with pytest.raises(PolicyViolation):
            client.get(h.url + "/fixed")  # 1000 per request > 10: nothing signed
    assert h.counters.calls.get("/fixed") is None


def test_an_engine_bug_is_a_logged_500_not_a_402(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A defect behind a valid credential (here: the store raising KeyError, as a buggy adapter
    would) is logged with its traceback and answered 500 problem+json; it used to be reported
    to the payer as a 402 "malformed credential"."""
    gate = env.gate()
    server = ServerThread(starlette_app(gate, Counters())).start()
    try:
        payer = env.payer_for(name="bug.db")
        with httpx.Client(auth=PaymentAuth(payer, allow_insecure=True, deposit=5_000)) as client:
            assert client.get(server.url + "/fixed").status_code == 200
            cid = payer.records.all()[0].channel_id  # type: ignore[attr-defined]

            def broken(*args: Any, **kwargs: Any) -> Any:
                raise KeyError("a bug")

            monkeypatch.setattr(gate.engine.store, "update", broken)
            ch = parse_challenges(
                httpx.get(server.url + "/fixed").headers.get_list("www-authenticate")
            )[0]
            auth = Credential(ch, payer.voucher_payload(cid, 3_000)).to_header()
            r = httpx.get(server.url + "/fixed", headers={"Authorization": auth})
        assert r.status_code == 500
        assert r.headers["content-type"] == "application/problem+json"
        assert "payment credential handling failed" in caplog.text and "KeyError" in caplog.text
    finally:
        server.stop()
