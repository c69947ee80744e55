"""`GET /metrics` of the inference app: real paid requests on anvil (Tempo mode) against our app
under uvicorn on loopback, scraped and parsed with prometheus-client's own parser.

The helpers here (`paid_app`, `stream_on_new_channel`, `refused_voucher`, `scrape`) are shared
with tests/inference/test_access_log.py and test_operator_page.py.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from mpp.chain.devnet import Devnet
from mpp.core.challenge import Challenge, parse_challenges
from mpp.core.credential import Credential
from mpp.core.errors import InvalidSignature, MalformedCredential
from mpp.http.server.metrics import PaymentMetrics, problem_name
from mpp.inference import (
    EmbeddedProvider,
    InferenceSettings,
    PaymentConfig,
    Price,
    Registry,
    create_app,
)
from mpp.inference.providers import GlassModel
from mpp.session.engine import SessionServer
from mpp.session.payer import Payer
from mpp.session.policy import SpendingPolicy
from mpp.session.terms import SessionTerms
from mpp.session.voucher import sign_voucher
from mpp.session.watcher import ChainWatcher
from mpp.store.sqlite import SqliteStore
from tests.inference.servers import MODEL, chat_body, issuer_for, serve_app, session_engine

SECRET = b"metrics.test-test-secret" * 4  # what `issuer_for("metrics.test")` uses
API_KEY = "sk-metrics-test-api-key-5f1e"
ADMIN_KEY = "admin-metrics-test-key-9c2d7e41"
CHAT = "/v1/chat/completions"
JSON = {"content-type": "application/json"}
UNIT_PRICE = 2  # base units per unit: Price(100, 200) is 2 per completion token
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class PaidApp:
    url: str
    engine: SessionServer
    settings: InferenceSettings
    devnet: Devnet
    tmp: Path

    def payer(self, account: LocalAccount, name: str) -> Payer:
        return Payer(
            "0x" + bytes(account.key).hex(),
            records_path=self.tmp / f"{name}.db",
            chain=self.devnet.chain(),
            policy=SpendingPolicy(max_amount_per_unit=10, max_deposit=10**7),
        )


@contextmanager
def paid_app(
    devnet: Devnet, payee: LocalAccount, tmp: Path, *, watcher: bool = False
) -> Iterator[PaidApp]:
    """Our paid app (API key, admin key, short voucher timeout) on a fresh store, on loopback."""
    store = SqliteStore(str(tmp / "server.db"))
    engine = session_engine(devnet, payee, store, unit_price=UNIT_PRICE)
    issuer = issuer_for("metrics.test")
    settings = InferenceSettings(
        registry=Registry(
            [EmbeddedProvider("local", [MODEL], Price(100, 200), model=GlassModel())]
        ),
        api_keys=frozenset({API_KEY}),
        payment=PaymentConfig(engine, issuer, voucher_timeout=1, failure_rate=None),
        suggested_deposit_units=500,
        admin_key=ADMIN_KEY,
        currency_decimals=6,
    )
    if watcher:
        settings.watcher = ChainWatcher(engine)
    try:
        with serve_app(create_app(settings)) as url:
            yield PaidApp(url, engine, settings, devnet, tmp)
    finally:
        store.close()


def challenge_for(url: str, raw: bytes) -> Challenge:
    """The 402 challenge for this exact body (CORE-13: it is bound to the body's digest)."""
    r = httpx.post(url + CHAT, content=raw, headers=JSON)
    assert r.status_code == 402
    (challenge,) = parse_challenges(r.headers.get_list("www-authenticate"))
    return challenge


@dataclass
class Streamed:
    channel_id: str
    authorization: str  # the open credential it was paid with
    final_receipt: dict[str, Any]
    body: str


def stream_on_new_channel(url: str, payer: Payer, *, initial: int, max_tokens: int) -> Streamed:
    """A stream paid by an open whose first voucher covers `initial` base units and nothing
    after: it runs dry, pauses for a voucher nobody sends (SES-31), and ends with its final
    receipt once the app's `voucher_timeout` passes."""
    raw = json.dumps(chat_body(max_tokens=max_tokens)).encode()
    challenge = challenge_for(url, raw)
    terms = SessionTerms.from_request(challenge.request)
    payload = payer.open_payload(terms, initial=initial)
    authorization = Credential(challenge, payload).to_header()
    r = httpx.post(url + CHAT, content=raw, headers={**JSON, "Authorization": authorization},
                   timeout=60)  # fmt: skip
    assert r.status_code == 200, r.text
    final = None
    for block in r.text.split("\n\n"):
        lines = block.splitlines()
        if "event: payment-receipt" in lines:
            final = json.loads("".join(ln[5:] for ln in lines if ln.startswith("data:")))
    assert final is not None, r.text
    return Streamed(str(final["channelId"]), authorization, final, r.text)


def refused_voucher(url: str, channel_id: str) -> str:
    """A voucher for `channel_id` signed by a stranger: refused as invalid-signature. Returns
    the credential sent."""
    raw = json.dumps(chat_body(max_tokens=2)).encode()
    challenge = challenge_for(url, raw)
    terms = SessionTerms.from_request(challenge.request)
    signature = sign_voucher("0x" + secrets.token_hex(32), channel_id, 60,
                             chain_id=terms.chain_id, escrow=terms.escrow_contract)  # fmt: skip
    payload = {"action": "voucher", "channelId": channel_id, "cumulativeAmount": "60",
               "signature": signature}  # fmt: skip
    authorization = Credential(challenge, payload).to_header()
    r = httpx.post(url + CHAT, content=raw, headers={**JSON, "Authorization": authorization})
    assert r.status_code == 402 and r.json()["type"].endswith("invalid-signature"), r.text
    return authorization


def scrape(url: str) -> Samples:
    """Every sample of `GET /metrics`, by (name, sorted labels)."""
    r = httpx.get(url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_metrics_follow_payments_pauses_refusals_and_the_store(
    devnet_clean: Devnet, payee: LocalAccount, payer: LocalAccount, tmp_path: Path
) -> None:
    with paid_app(devnet_clean, payee, tmp_path, watcher=True) as app:
        assert app.settings.watcher is not None
        app.settings.watcher.poll()
        before = scrape(app.url)
        assert before[("mpp_store_up", ())] == 1
        assert before[("mpp_spent_base_units", ())] == 0
        streamed = stream_on_new_channel(app.url, app.payer(payer, "p"), initial=40, max_tokens=30)
        refused_voucher(app.url, streamed.channel_id)
        bearer = httpx.post(app.url + CHAT, json=chat_body(max_tokens=3),
                            headers={"Authorization": f"Bearer {API_KEY}"})  # fmt: skip
        assert bearer.status_code == 200
        after = scrape(app.url)
    spent = int(streamed.final_receipt["spent"])
    assert spent > 0
    assert after[("mpp_vouchers_accepted_total", (("action", "open"),))] == 1
    assert after[("mpp_vouchers_refused_total", (("reason", "invalid-signature"),))] == 1
    assert after[("mpp_stream_pauses_total", ())] >= 1  # it ran dry and waited
    assert after[("mpp_streams_started_total", ())] == 1
    assert after[("mpp_streams_active", ())] == 0
    # From the store at scrape time: what was delivered is unsettled exposure until settled.
    assert after[("mpp_spent_base_units", ())] == spent
    assert after[("mpp_unsettled_base_units", ())] == spent
    assert after[("mpp_settled_base_units", ())] == 0
    assert after[("mpp_accepted_base_units", ())] == 40
    assert after[("mpp_channels", (("state", "open"),))] == 1
    route = (("method", "POST"), ("route", CHAT), ("status", "200"))
    assert after[("mpp_http_requests_total", route)] == 2  # the paid stream and the API-key one
    assert after[("mpp_http_requests_total", (*route[:2], ("status", "402")))] == 3
    assert after[("mpp_provider_ttft_seconds_count", (("provider", "local"),))] == 2
    assert after[("mpp_provider_completion_tokens_total", (("provider", "local"),))] > 0
    assert after[("mpp_chain_watcher_lag_blocks", ())] >= 0
    assert ("mpp_chain_watcher_head_block", ()) in after


def test_each_app_has_its_own_registry() -> None:
    """Counters live on a per-app registry: two apps (or two test servers in one process) never
    share them, and nothing lands on prometheus-client's global registry."""
    first, second = CollectorRegistry(), CollectorRegistry()
    a, b = PaymentMetrics(first), PaymentMetrics(second)
    a.refused(InvalidSignature("bad"), "0x" + "ab" * 32)
    a.refused(MalformedCredential("bad"), None)
    b.paused("0x" + "cd" * 32)
    assert (
        first.get_sample_value("mpp_vouchers_refused_total", {"reason": "invalid-signature"}) == 1
    )
    assert first.get_sample_value("mpp_vouchers_refused_total",
                                  {"reason": "malformed-credential"}) == 1  # fmt: skip
    assert second.get_sample_value("mpp_vouchers_refused_total",
                                   {"reason": "invalid-signature"}) is None  # fmt: skip
    assert second.get_sample_value("mpp_stream_pauses_total") == 1
    assert first.get_sample_value("mpp_stream_pauses_total") == 0
    assert problem_name(InvalidSignature("x")) == "invalid-signature"


def test_metrics_of_an_unpaid_app_answer_without_payment_figures() -> None:
    settings = InferenceSettings(
        registry=Registry([EmbeddedProvider("local", [MODEL], Price(1, 2), model=GlassModel())]),
        api_keys=frozenset({API_KEY}),
    )
    with serve_app(create_app(settings)) as url:
        r = httpx.post(url + CHAT, json=chat_body(max_tokens=2),
                       headers={"Authorization": f"Bearer {API_KEY}"})  # fmt: skip
        assert r.status_code == 200
        samples = scrape(url)
        assert httpx.post(url + "/metrics").status_code == 405
    assert ("mpp_spent_base_units", ()) not in samples
    route = (("method", "POST"), ("route", CHAT), ("status", "200"))
    assert samples[("mpp_http_requests_total", route)] == 1


@pytest.mark.parametrize("path", ["/metrics?x=%00", "/metrics/../metrics"])
def test_odd_metrics_urls_get_a_clear_answer(path: str) -> None:
    settings = InferenceSettings(registry=Registry(
        [EmbeddedProvider("local", [MODEL], Price(1, 2), model=GlassModel())]))  # fmt: skip
    with serve_app(create_app(settings)) as url:
        r = httpx.get(url + path)
    assert r.status_code in (200, 404)


def test_a_prompt_the_payer_cannot_cover_costs_no_model_work(
    devnet_clean: Devnet, payee: LocalAccount, payer: LocalAccount, tmp_path: Path
) -> None:
    """The prompt is paid before the model generates: an open whose first voucher (one unit)
    does not cover the prompt is answered 402 with the exact shortfall (SES-27), and the
    provider never produced a token (no time-to-first-token sample, no completion tokens)."""
    with paid_app(devnet_clean, payee, tmp_path) as app:
        raw = json.dumps(chat_body(max_tokens=5)).encode()
        challenge = challenge_for(app.url, raw)
        terms = SessionTerms.from_request(challenge.request)
        payload = app.payer(payer, "short").open_payload(terms, initial=UNIT_PRICE)
        auth = Credential(challenge, payload).to_header()
        r = httpx.post(app.url + CHAT, content=raw, headers={**JSON, "Authorization": auth})
        samples = scrape(app.url)
    assert r.status_code == 402, r.text
    problem = r.json()
    assert problem["type"].endswith("insufficient-balance") and int(problem["requiredTopUp"]) > 0
    assert samples[("mpp_vouchers_accepted_total", (("action", "open"),))] == 1
    assert samples.get(("mpp_provider_ttft_seconds_count", (("provider", "local"),)), 0) == 0
    assert samples.get(("mpp_provider_completion_tokens_total", (("provider", "local"),)), 0) == 0
    assert samples[("mpp_spent_base_units", ())] == 0  # nothing was delivered
