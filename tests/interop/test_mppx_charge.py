"""The official TypeScript SDK's charge client (mppx 0.11, `tempo.charge`, under Node) pays our
charge server on anvil: a signed 0x76 transfer with its attribution memo (CHG-07), broadcast by
our server, answered 200 with a receipt (CHG-11). Under CI a missing Node or mppx fails."""

from __future__ import annotations

import json
import subprocess
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
from tests.interop.test_mppx_codec import node_or_skip

CLIENT = Path(__file__).with_name("mppx_charge_client.mjs")
PRICE = Price(amount=4_200, intents=("charge",))


@pytest.fixture
def env(devnet_clean: Devnet, payer: LocalAccount, payee: LocalAccount, tmp_path: Path) -> Env:
    return Env(devnet_clean, "0x" + payer.key.hex(), "0x" + payee.key.hex(), tmp_path)


@pytest.fixture
def server(env: Env) -> Iterator[str]:
    gate = PaymentGate(env.engine(), env.issuer(), [Route("/report", PRICE)])
    thread = ServerThread(plain_app(gate, Counters())).start()
    try:
        yield thread.url
    finally:
        thread.stop()


def test_chg_07_mppx_charge_client_pays_our_server(server: str, env: Env) -> None:
    node = node_or_skip()
    chain = env.devnet.chain()
    before = chain.balance_of(TOKEN, env.payee)
    config = {"url": server + "/report", "rpcUrl": env.devnet.rpc_url,
              "privateKey": env.payer_key, "chainId": env.devnet.chain_id}  # fmt: skip
    proc = subprocess.run(
        [node, str(CLIENT)], input=json.dumps(config), capture_output=True, text=True,
        timeout=120, cwd=str(CLIENT.parent),
    )  # fmt: skip
    assert proc.stdout, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result.get("status") == 200, result
    assert chain.balance_of(TOKEN, env.payee) == before + 4_200
    receipt = parse_receipt(result["receipt"]).to_json()
    assert receipt["status"] == "success" and str(receipt["reference"]).startswith("0x")


SERVER = Path(__file__).with_name("mppx_charge_server.mjs")


@pytest.fixture
def mppx_server(env: Env) -> Iterator[str]:
    from mpp.cli._paid import free_port

    node = node_or_skip()
    port = free_port()
    config = {"port": port, "rpcUrl": env.devnet.rpc_url, "chainId": env.devnet.chain_id,
              "recipient": env.payee, "currency": TOKEN,
              "secret": "mppx-peer-secret-0123456789abcdef-0123", "amount": "0.0042"}  # fmt: skip
    with peer_server([node, str(SERVER)], config, SERVER.parent):
        yield f"http://127.0.0.1:{port}"


def test_chg_08_our_client_pays_an_mppx_charge_server_by_push(mppx_server: str, env: Env) -> None:
    """Push mode. Pull is blocked on anvil: mppx's server simulates the payer's self-paid 0x76
    transaction before it broadcasts, and anvil answers that simulation with an error viem reads
    as "gas exceeds the limit allowed for the block" (at 300 k and at 500 k gas alike), while the
    same transaction broadcasts fine (our server takes it)."""
    chain = env.devnet.chain()
    before = chain.balance_of(TOKEN, env.payee)
    auth = PaymentAuth(env.payer_for(), allow_insecure=True, charge_mode="push")
    with httpx.Client(auth=auth, timeout=60) as client:
        r = client.get(mppx_server + "/paid")
    assert r.status_code == 200, r.text
    assert chain.balance_of(TOKEN, env.payee) == before + 4_200
    assert r.extensions[RECEIPTS_KEY][0]["status"] == "success"
