"""Both intents from one server over real HTTP (uvicorn on loopback, anvil in Tempo mode).

A route priced per request with `charge`, one with both intents (both challenges in one 402,
the client picks by its Accept-Payment), and a metered stream on sessions, behind one
PaymentMiddleware; `PaymentAuth` pays each. CHG-02/03/11 over the wire: the receipt header on a
2xx only, a replayed credential refused with a fresh challenge.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from mpp.core.challenge import parse_challenges
from mpp.core.receipt import parse_receipt
from mpp.http import PaymentAuth, PaymentGate, Price, Route
from mpp.http.client import RECEIPTS_KEY
from tests.http.support import PER_TOKEN, TOKEN, Counters, Env, ServerThread, plain_app

CHARGED = Price(amount=250, intents=("charge",), description="one report")
BOTH = Price(amount=100, intents=("session", "charge"))


@pytest.fixture
def server(env: Env) -> Iterator[ServerThread]:
    routes = [Route("/report", CHARGED), Route("/both", BOTH), Route("/stream", PER_TOKEN)]
    gate = PaymentGate(env.engine(), env.issuer(), routes)
    thread = ServerThread(plain_app(gate, Counters())).start()
    try:
        yield thread
    finally:
        thread.stop()


def _balance(env: Env, who: str) -> int:
    return int(env.devnet.chain().balance_of(TOKEN, who))


def test_chg_01_a_charge_route_offers_one_charge_challenge(server: ServerThread) -> None:
    r = httpx.get(server.url + "/report")
    assert r.status_code == 402
    [ch] = parse_challenges(r.headers.get_list("www-authenticate"))
    assert (ch.method, ch.intent) == ("tempo", "charge")
    assert ch.request["amount"] == "250" and "expires" not in ch.request  # CHG-01
    assert ch.description == "one report"


def test_chg_11_payment_auth_pays_a_charge_and_gets_its_receipt(
    server: ServerThread, env: Env
) -> None:
    before = _balance(env, env.payee)
    auth = PaymentAuth(env.payer_for(), allow_insecure=True)
    with httpx.Client(auth=auth, timeout=30) as client:
        r = client.get(server.url + "/report")
    assert r.status_code == 200 and r.json()["path"] == "/report"
    assert _balance(env, env.payee) == before + 250
    receipt = parse_receipt(r.headers["payment-receipt"]).to_json()
    assert receipt["method"] == "tempo" and receipt["status"] == "success"
    assert receipt["reference"].startswith("0x")  # the transaction hash
    assert "private" in r.headers["cache-control"]
    assert r.extensions[RECEIPTS_KEY][0]["reference"] == receipt["reference"]


def test_both_intents_in_one_402_and_each_client_chooses(server: ServerThread, env: Env) -> None:
    r = httpx.get(server.url + "/both")
    offered = parse_challenges(r.headers.get_list("www-authenticate"))
    assert [c.intent for c in offered] == ["session", "charge"]
    before = _balance(env, env.payee)
    sessions = PaymentAuth(env.payer_for(), allow_insecure=True)  # prefers a session
    with httpx.Client(auth=sessions, timeout=30) as client:
        assert client.get(server.url + "/both").status_code == 200
        assert client.get(server.url + "/stream?n=5").status_code == 200
    assert _balance(env, env.payee) == before  # vouchers only: nothing on chain for the payee
    charges = PaymentAuth(env.payer_for(name="p2.db"), allow_insecure=True,
                          accept_payment="tempo/charge")  # fmt: skip
    with httpx.Client(auth=charges, timeout=30) as client:
        r = client.get(server.url + "/both")
    assert r.status_code == 200
    assert _balance(env, env.payee) == before + 100
    assert parse_receipt(r.headers["payment-receipt"]).to_json()["intent"] == "charge"


def test_chg_03_replayed_charge_credential_gets_a_fresh_challenge(
    server: ServerThread, env: Env
) -> None:
    seen: list[httpx.Request] = []
    auth = PaymentAuth(env.payer_for(), allow_insecure=True)
    with httpx.Client(auth=auth, timeout=30, event_hooks={"request": [seen.append]}) as client:
        assert client.get(server.url + "/report").status_code == 200
    credential = seen[-1].headers["authorization"]
    replay = httpx.get(server.url + "/report", headers={"authorization": credential})
    assert replay.status_code == 402 and "payment-receipt" not in replay.headers
    assert replay.json()["type"].endswith("invalid-challenge")
    assert parse_challenges(replay.headers.get_list("www-authenticate"))  # a fresh one


def test_chg_02_a_session_credential_on_a_charge_only_route_is_refused(
    server: ServerThread, env: Env
) -> None:
    session_only = PaymentAuth(env.payer_for(), allow_insecure=True, accept_payment="tempo/session")
    with httpx.Client(auth=session_only, timeout=30) as client:
        r = client.get(server.url + "/report")
    assert r.status_code == 402  # nothing it may pay: the 402 comes back, nothing signed
    assert not session_only.receipts


def test_charge_prices_are_per_request_only() -> None:
    with pytest.raises(ValueError, match="per request"):
        Price(amount=1, unit_type="token", intents=("charge",))
    with pytest.raises(ValueError):
        Price(amount=1, intents=())


def test_chg_02_an_expired_charge_challenge_is_refused_before_any_payment(
    server: ServerThread, env: Env
) -> None:
    from datetime import UTC, datetime, timedelta

    from mpp.charge import ChargePayer, ChargeTerms
    from mpp.core.binding import ChallengeIssuer
    from mpp.core.credential import Credential
    from tests.http.support import SECRET

    terms = ChargeTerms(250, TOKEN, env.payee.lower(), chain_id=env.devnet.chain_id,
                        description="one report")  # fmt: skip
    past = datetime.now(UTC) - timedelta(minutes=10)  # the issuer's ttl is 5 minutes
    old = ChallengeIssuer(SECRET, realm="test.local").issue(
        method="tempo", intent="charge", request=terms.to_request(), now=past,
        description="one report",
    )  # fmt: skip
    payer = ChargePayer(env.payer_for())
    payload = payer.payload(terms, challenge_id=old.id, expires=None, realm=old.realm)
    header = Credential(old, payload, source=payer.did(terms)).to_header()
    before = _balance(env, env.payee)
    r = httpx.get(server.url + "/report", headers={"authorization": header})
    assert r.status_code == 402 and "payment-receipt" not in r.headers
    assert r.json()["type"].endswith("invalid-challenge")
    assert _balance(env, env.payee) == before  # nothing broadcast


def test_chg_05_06_route_options_are_issued_and_paid(env: Env) -> None:
    """A route's memo, splits, supportedModes and externalId reach the challenge and are paid
    as asked (push here: the only mode offered)."""
    from mpp.charge import Split
    from mpp.http.server import ChargeOptions

    (platform,) = env.devnet.new_accounts(1)
    memo = "0x" + "0d" * 32
    options = ChargeOptions(memo=memo, splits=(Split(platform.address.lower(), 40),),
                            supported_modes=("push",), external_id="order-9")  # fmt: skip
    price = Price(amount=400, intents=("charge",), charge=options)
    gate = PaymentGate(env.engine(), env.issuer(), [Route("/split", price)])
    thread = ServerThread(plain_app(gate, Counters())).start()
    try:
        r = httpx.get(thread.url + "/split")
        [ch] = parse_challenges(r.headers.get_list("www-authenticate"))
        details = ch.request["methodDetails"]
        assert details["memo"] == memo and details["supportedModes"] == ["push"]
        assert details["splits"] == [{"amount": "40", "recipient": platform.address.lower()}]
        assert ch.request["externalId"] == "order-9"
        before = (_balance(env, env.payee), _balance(env, platform.address))
        auth = PaymentAuth(env.payer_for(), allow_insecure=True)
        with httpx.Client(auth=auth, timeout=30) as client:
            paid = client.get(thread.url + "/split")
        assert paid.status_code == 200, paid.text
        assert _balance(env, env.payee) == before[0] + 360
        assert _balance(env, platform.address) == before[1] + 40
        assert parse_receipt(paid.headers["payment-receipt"]).to_json()["externalId"] == "order-9"
    finally:
        thread.stop()
