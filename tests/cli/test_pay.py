"""`mpp pay URL` against a real server on loopback (uvicorn + PaymentMiddleware, anvil): a
charge route, a route with both intents, a session route; `-i`, `--json`, `--max-amount`,
`--dry-run` (nothing signed), and one-line errors."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from mpp.core.receipt import parse_receipt
from mpp.http import PaymentGate, Price, Route
from tests.cli.conftest import CLI, Env
from tests.http.support import TOKEN, Counters, ServerThread, plain_app
from tests.http.support import Env as ServerEnv

REPORT = Price(amount=2_000, intents=("charge",), description="one report")
BOTH = Price(amount=300, intents=("session", "charge"))
SESSION = Price(amount=500, suggested_deposit=50_000)


@pytest.fixture
def server(env: Env) -> Iterator[str]:
    senv = ServerEnv(env.devnet, "0x" + bytes(env.payer.key).hex(),
                     "0x" + bytes(env.payee.key).hex(), env.tmp)  # fmt: skip
    routes = [Route("/report", REPORT), Route("/both", BOTH), Route("/flat", SESSION)]
    thread = ServerThread(plain_app(PaymentGate(senv.engine(), senv.issuer(), routes), Counters()))
    thread.start()
    try:
        yield thread.url
    finally:
        thread.stop()


def _paid_line(err: str) -> dict[str, object]:
    line = next(ln for ln in err.splitlines() if ln.startswith("mpp: paid ("))
    receipt: dict[str, object] = json.loads(line.split("): ", 1)[1])
    return receipt


def test_pay_a_charged_get_prints_body_and_receipt(cli: CLI, env: Env, server: str) -> None:
    chain = env.devnet.chain()
    before = chain.balance_of(TOKEN, env.payee.address)
    result = cli("pay", server + "/report")
    assert result.code == 0, result.err
    assert json.loads(result.out)["path"] == "/report"
    assert chain.balance_of(TOKEN, env.payee.address) == before + 2_000
    receipt = _paid_line(result.err)
    assert receipt["intent"] == "charge" and str(receipt["reference"]).startswith("0x")


def test_pay_post_json_with_headers_and_include(cli: CLI, server: str) -> None:
    result = cli("pay", "-i", "-H", "X-Trace: 7", "--json", '{"q": 1}', server + "/both")
    assert result.code == 0, result.err
    head, _, body = result.out.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200 OK")
    assert "payment-receipt:" in head.lower()
    assert json.loads(body)["path"] == "/both"
    assert _paid_line(result.err)["intent"] == "session"  # preferred where both are offered


def test_pay_session_route_on_defaults(cli: CLI, server: str) -> None:
    result = cli("pay", server + "/flat")
    assert result.code == 0, result.err
    receipt = _paid_line(result.err)
    assert receipt["intent"] == "session" and receipt["spent"] == "500"


def test_pay_max_amount_refuses_before_signing(cli: CLI, env: Env, server: str) -> None:
    chain = env.devnet.chain()
    before = chain.balance_of(TOKEN, env.payee.address)
    result = cli("pay", "--max-amount", "1000", server + "/report")
    assert result.code == 1
    assert "per-request maximum" in result.error
    assert chain.balance_of(TOKEN, env.payee.address) == before


def test_pay_dry_run_prints_offers_and_decision_without_signing(
    cli: CLI, env: Env, server: str
) -> None:
    chain = env.devnet.chain()
    before = chain.balance_of(TOKEN, env.payer.address)
    result = cli("pay", "--dry-run", server + "/both")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].startswith("offered: tempo/session amount=300")
    assert lines[1].startswith("offered: tempo/charge amount=300")
    assert lines[-1] == "decision: pay tempo/session (nothing was signed)"
    refused = cli("pay", "--dry-run", "--max-amount", "100", server + "/report")
    assert refused.code == 1
    assert refused.out.splitlines()[-1].startswith("decision: refuse tempo/charge")
    assert chain.balance_of(TOKEN, env.payer.address) == before
    assert not env.records.exists() or "open" not in env.records.read_bytes().decode("latin-1")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["pay", "http://example.com/x"], "loopback"),
        (["pay", "-H", "no-colon", "http://127.0.0.1:1/x"], "bad header"),
        (["pay", "--json", "{", "http://127.0.0.1:1/x"], "JSON document"),
        (["pay", "-d", "a", "--json", "{}", "http://127.0.0.1:1/x"], "either -d or --json"),
        (["pay", "http://127.0.0.1:1/x"], "cannot reach"),
    ],
)
def test_pay_errors_are_one_line(cli: CLI, argv: list[str], message: str) -> None:
    result = cli(*argv)
    assert result.code in (1, 2)
    assert message in result.error


def test_pay_receipt_header_parses(cli: CLI, server: str) -> None:
    result = cli("pay", "-i", server + "/report")
    header = next(ln for ln in result.out.splitlines() if ln.lower().startswith("payment-receipt:"))
    assert parse_receipt(header.split(":", 1)[1].strip()).to_json()["status"] == "success"
