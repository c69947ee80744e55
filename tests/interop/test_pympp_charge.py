"""The official Python SDK (pympp 0.16, its own venv) pays our charge server on anvil.

Our PaymentMiddleware prices a route per request with tempo/charge; pympp's `tempo.charge`
client answers the 402 with a signed 0x76 transfer (it adds its attribution memo, so the server
sees `transferWithMemo` for a request without a memo, CHG-07); our server broadcasts it and
answers 200 with a receipt (CHG-11). Under CI a missing peer venv fails instead of skipping.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from eth_account.signers.local import LocalAccount

from mpp.chain.devnet import Devnet
from mpp.core.receipt import parse_receipt
from mpp.http import PaymentAuth, PaymentGate, Price, Route
from mpp.http.client import RECEIPTS_KEY
from tests.http.support import TOKEN, Counters, Env, ServerThread, plain_app
from tests.interop.peer_server import peer_server

ROOT = Path(__file__).resolve().parents[2]
PEER_PYTHON = ROOT / ".peers" / "pympp" / "bin" / "python"
PEER_SCRIPT = Path(__file__).with_name("pympp_charge_client.py")
PRICE = Price(amount=1_500, intents=("charge",))


@pytest.fixture
def env(devnet_clean: Devnet, payer: LocalAccount, payee: LocalAccount, tmp_path: Path) -> Env:
    # pympp signs `valid_before = wall clock + 60 s`; anvil's newest hardfork (T4) keeps an
    # expiring nonce only within 30 s of the chain's clock (300 s on the live network since
    # T11) and drops it silently otherwise. Run the chain's clock 35 s ahead of the wall clock.
    devnet_clean.set_next_block_timestamp(int(time.time()) + 35)
    devnet_clean.mine()
    return Env(devnet_clean, "0x" + payer.key.hex(), "0x" + payee.key.hex(), tmp_path)


@pytest.fixture
def server(env: Env) -> Iterator[ServerThread]:
    if not PEER_PYTHON.exists():
        message = f"pympp peer venv missing at {PEER_PYTHON} (run scripts/setup.sh)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    gate = PaymentGate(env.engine(), env.issuer(), [Route("/report", PRICE)])
    thread = ServerThread(plain_app(gate, Counters())).start()
    try:
        yield thread
    finally:
        thread.stop()


def _pympp_pays(env: Env, url: str, cap: int) -> dict[str, object]:
    cfg = {"url": url, "key": env.payer_key, "rpc_url": env.devnet.rpc_url,
           "chain_id": env.devnet.chain_id, "currency": TOKEN,
           "max_atomic_amount": cap}  # fmt: skip
    proc = subprocess.run(
        [str(PEER_PYTHON), str(PEER_SCRIPT)],
        input=json.dumps(cfg) + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(PEER_SCRIPT.parent),  # keep our own `mpp` off the peer's sys.path
    )
    assert proc.stdout, proc.stderr[-2000:]
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_chg_07_pympp_charge_client_pays_our_server(server: ServerThread, env: Env) -> None:
    chain = env.devnet.chain()
    before = chain.balance_of(TOKEN, env.payee)
    result = _pympp_pays(env, server.url + "/report", 10_000)
    assert "error" not in result, result
    assert result["status"] == 200, result
    assert chain.balance_of(TOKEN, env.payee) == before + 1_500
    receipt = parse_receipt(str(result["receipt"])).to_json()
    assert receipt["status"] == "success" and str(receipt["reference"]).startswith("0x")


def test_chg_04_pympp_refuses_a_price_above_its_cap(server: ServerThread, env: Env) -> None:
    chain = env.devnet.chain()
    before = chain.balance_of(TOKEN, env.payee)
    result = _pympp_pays(env, server.url + "/report", 1_000)
    assert result.get("status") != 200
    assert chain.balance_of(TOKEN, env.payee) == before


SERVER_SCRIPT = Path(__file__).with_name("pympp_charge_server.py")


@pytest.fixture
def pympp_server(env: Env) -> Iterator[str]:
    from mpp.cli._paid import free_port

    port = free_port()
    cfg = {"port": port, "recipient": env.payee, "chain_id": env.devnet.chain_id,
           "rpc_url": env.devnet.rpc_url, "currency": TOKEN,
           "secret": "pympp-peer-secret-0123456789abcdef", "amount": "0.0025"}  # fmt: skip
    with peer_server([str(PEER_PYTHON), str(SERVER_SCRIPT)], cfg, SERVER_SCRIPT.parent):
        yield f"http://127.0.0.1:{port}"


def test_chg_08_our_client_pays_a_pympp_charge_server_by_push(pympp_server: str, env: Env) -> None:
    """Push mode (our client broadcasts, the server checks the receipt's logs). Pull is blocked
    on this anvil: pympp's server submits with `eth_sendRawTransactionSync(raw, 20000)`, whose
    integer timeout anvil refuses ("expected ... bytes")."""
    chain = env.devnet.chain()
    before = chain.balance_of(TOKEN, env.payee)
    auth = PaymentAuth(env.payer_for(), allow_insecure=True, charge_mode="push")
    with httpx.Client(auth=auth, timeout=60) as client:
        r = client.get(pympp_server + "/paid")
    assert r.status_code == 200, r.text
    assert r.json() == {"paid": True}
    assert chain.balance_of(TOKEN, env.payee) == before + 2_500
    receipt = r.extensions[RECEIPTS_KEY][0]
    assert receipt["status"] == "success" and str(receipt["reference"]).startswith("0x")
