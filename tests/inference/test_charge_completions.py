"""`charge_per_request` on the paid inference server: a JSON (non-streaming) completion may pay
once with tempo/charge, while streams stay on sessions (per token). Real uvicorn on loopback,
anvil in Tempo mode, the embedded model."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mpp.chain.devnet import Devnet
from mpp.core.challenge import parse_challenges
from mpp.core.receipt import parse_receipt
from mpp.http import PaymentAuth
from mpp.inference import (
    EmbeddedProvider,
    InferenceSettings,
    PaymentConfig,
    Price,
    Registry,
    create_app,
)
from mpp.inference.providers import GlassModel
from mpp.session.payer import Payer
from mpp.session.policy import SpendingPolicy
from mpp.store.sqlite import SqliteStore
from tests.inference.servers import (
    MODEL,
    TOKEN,
    chat_body,
    devnet_or_skip,
    issuer_for,
    serve_app,
    session_engine,
)

PER_REQUEST = 5_000
URL_PATH = "/v1/chat/completions"


@dataclass
class Server:
    devnet: Devnet
    url: str
    payee: str
    tmp: Path

    def payer(self, name: str) -> Payer:
        (account,) = self.devnet.new_accounts(1)
        policy = SpendingPolicy(max_deposit=10**7)
        path = self.tmp / f"{name}.db"
        return Payer("0x" + account.key.hex(), records_path=path, chain=self.devnet.chain(),
                     policy=policy)  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with devnet_or_skip() as devnet:
        tmp = tmp_path_factory.mktemp("charged")
        (payee,) = devnet.new_accounts(1)
        engine = session_engine(devnet, payee, SqliteStore(str(tmp / "server.db")))
        issuer = issuer_for("llm.test")
        provider = EmbeddedProvider("local", [MODEL], Price(100, 200), model=GlassModel())
        payment = PaymentConfig(engine, issuer, failure_rate=None, charge_per_request=PER_REQUEST)
        settings = InferenceSettings(
            registry=Registry([provider]), payment=payment, suggested_deposit_units=5_000
        )
        with serve_app(create_app(settings)) as url:
            yield Server(devnet, url, payee.address.lower(), tmp)


def _offered(server: Server, **body: object) -> list[tuple[str, str]]:
    r = httpx.post(server.url + URL_PATH, json=chat_body(**body))  # type: ignore[arg-type]
    assert r.status_code == 402
    return [(c.intent, c.request["amount"]) for c in
            parse_challenges(r.headers.get_list("www-authenticate"))]  # fmt: skip


def test_a_json_completion_is_offered_charge_and_a_stream_is_not(server: Server) -> None:
    assert _offered(server, stream=False) == [("session", "2"), ("charge", str(PER_REQUEST))]
    assert _offered(server, stream=True) == [("session", "2")]


def test_a_json_completion_paid_once_with_charge(server: Server) -> None:
    chain = server.devnet.chain()
    before = chain.balance_of(TOKEN, server.payee)
    auth = PaymentAuth(server.payer("charge"), allow_insecure=True, accept_payment="tempo/charge")
    with httpx.Client(auth=auth, timeout=60) as client:
        r = client.post(server.url + URL_PATH, json=chat_body(stream=False, max_tokens=8))
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 8
    assert parse_receipt(r.headers["payment-receipt"]).to_json()["intent"] == "charge"
    assert chain.balance_of(TOKEN, server.payee) == before + PER_REQUEST


def test_streams_stay_on_sessions(server: Server) -> None:
    auth = PaymentAuth(server.payer("session"), allow_insecure=True)
    with httpx.Client(auth=auth, timeout=60) as client:
        r = client.post(server.url + URL_PATH, json=chat_body(stream=True, max_tokens=5))
    assert r.status_code == 200
    receipts = r.extensions["mpp.receipts"]
    assert receipts and all(rec.get("intent") == "session" for rec in receipts)


def test_charge_amount_is_required_for_a_metered_charge() -> None:
    from mpp.http import Price as HttpPrice

    with pytest.raises(ValueError, match="charge_amount"):
        HttpPrice(amount=2, unit_type="llm_token", intents=("session", "charge"))
    with pytest.raises(ValueError, match="metered"):
        HttpPrice(amount=2, charge_amount=5)


def test_models_list_says_how_to_pay(server: Server) -> None:
    [model] = httpx.get(server.url + "/v1/models").json()["data"]
    assert model["payment"] == {
        "methods": ["tempo/session", "tempo/charge"], "currency": TOKEN, "unitType": "llm_token",
        "amountPerUnit": "2", "chargePerRequest": str(PER_REQUEST),
    }  # fmt: skip
    assert model["pricing"]["input_price_per_million"] == 100
