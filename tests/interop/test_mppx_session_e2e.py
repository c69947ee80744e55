"""End to end: mppx 0.11's legacy session client (`tempo.sessionLegacy`) pays our server.

Our side: tests/faults/paid_server.py (PaymentMiddleware + SessionServer on SQLite, a metered
SSE route) in its own process on loopback, against anvil in Tempo mode with our escrow. Their
side: tests/interop/mppx_session_client.mjs under Node. The client opens a channel on our escrow
(a signed 0x76 approve+open batch our server broadcasts), streams through several
`payment-need-voucher` rounds (bodyless voucher POSTs), and closes cooperatively; on chain the
payee receives exactly what our store recorded as spent, and the payer gets the rest back.

Rows: SES-13/14/16 (open), SES-19/22/31 (vouchers, need-voucher), SES-32/33 (receipts),
SES-34 (vouchers to the same URI), SES-36/37 + AMB-02 (close captures spent), AMB-15 (2xx).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from mpp.chain.devnet import Devnet
from mpp.store.sqlite import SqliteStore
from tests.faults.harness import ServerProcess
from tests.interop.test_mppx_codec import node_or_skip

CLIENT = Path(__file__).with_name("mppx_session_client.mjs")
ROOT = Path(__file__).resolve().parents[2]
PRICE = 10  # base units per token
DEPOSIT = 1_000  # suggestedDeposit; mppx deposits min(suggestedDeposit, maxDeposit)
TOKENS = 6


def run_mppx_client(config: dict[str, Any], timeout: float = 90.0) -> list[dict[str, Any]]:
    """Run the Node client to completion (killed at `timeout`); its JSON-lines events."""
    node = node_or_skip()
    try:
        done = subprocess.run(
            [node, str(CLIENT), json.dumps(config)],
            cwd=str(ROOT),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"mppx client timed out; stdout: {exc.stdout!r}") from None
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0:
        raise AssertionError(
            f"mppx client failed ({done.returncode}): {events[-3:]}\nstderr: {done.stderr[-2000:]}"
        )
    return events


def server_config(devnet: Devnet, payee: LocalAccount, tmp: Path, **extra: Any) -> dict[str, Any]:
    """tests/faults/paid_server.py's config for these runs; `extra` overrides."""
    config = {
        "rpc_url": devnet.rpc_url,
        "chain_id": devnet.chain_id,
        "escrow": devnet.escrow,
        "token": devnet.token,
        "payee_key": "0x" + bytes(payee.key).hex(),
        "db": str(tmp / "server.db"),
        "secret": "e2e-secret-0123456789abcdef-0123456789",
        "price": PRICE,
        "suggested_deposit": DEPOSIT,
        "tokens": TOKENS,
        "voucher_timeout": 20.0,
        "reserve_units": 1,
    }
    return {**config, **extra}


@pytest.fixture
def server(devnet_clean: Devnet, payee: LocalAccount, tmp_path: Path) -> Iterator[ServerProcess]:
    config = server_config(devnet_clean, payee, tmp_path)
    with ServerProcess(config) as proc:
        proc.start()
        yield proc


@pytest.mark.parametrize("escrow_mode", ["custom", "pinned"])
def test_ses_31_mppx_legacy_client_pays_our_server(
    devnet_clean: Devnet,
    server: ServerProcess,
    payer: LocalAccount,
    payee: LocalAccount,
    escrow_mode: str,
) -> None:
    """SES-13..37: mppx opens on our escrow, streams through ≥2 need-voucher rounds, receives
    every token, and closes; the payee gets exactly the recorded `spent`. The client either
    accepts the challenge's escrow (`allowCustomEscrow`) or is pinned to ours."""
    token = devnet_clean.token
    view = devnet_clean.chain()
    payer_before = view.balance_of(token, payer.address)
    config = {
        "url": server.url,
        "rpcUrl": devnet_clean.rpc_url,
        "privateKey": "0x" + bytes(payer.key).hex(),
        "chainId": devnet_clean.chain_id,
        "maxDeposit": "1",
        "streams": 2,
    }
    if escrow_mode == "pinned":
        config["escrow"] = devnet_clean.escrow
    events = run_mppx_client(config)

    messages = [e["data"] for e in events if e["kind"] == "message"]
    assert messages == [f"tok-{i}" for i in range(TOKENS)] * 2
    requests = [e for e in events if e["kind"] == "request"]
    assert all(r["status"] < 300 or r["status"] == 402 for r in requests), requests
    vouchers = [r for r in requests if r["action"] == "voucher" and r["method"] == "POST"]
    assert len(vouchers) >= 2 and all(200 <= r["status"] < 300 for r in vouchers)
    assert [r["action"] for r in requests].count("open") == 1

    close = next(e for e in events if e["kind"] == "close")
    cid = close["channelId"]
    final = close["receipt"]
    assert final is not None and final["txHash"] and final["channelId"] == cid

    # Our record of the channel, and the chain's.
    state = SqliteStore(server.config["db"]).get(cid)
    assert state is not None and state.finalized
    spent = state.spent
    assert spent == 2 * TOKENS * PRICE
    assert int(final["spent"]) == spent
    onchain = view.read_channel(devnet_clean.escrow, cid)
    assert onchain.finalized and onchain.settled == spent  # payee received exactly `spent`
    # The payer paid `spent` to the payee plus its open fee (in pathUSD); nothing else left.
    payer_paid = payer_before - view.balance_of(token, payer.address)
    assert spent <= payer_paid < spent + 10**6  # the open tx fee stays under 1 pathUSD
    receipts = [e["receipt"] for e in events if e["kind"] == "receipt"]
    assert receipts and all(int(r["spent"]) <= int(r["acceptedCumulative"]) for r in receipts)


@pytest.fixture
def slow_server(
    devnet_clean: Devnet, payee: LocalAccount, tmp_path: Path
) -> Iterator[ServerProcess]:
    config = server_config(
        devnet_clean, payee, tmp_path, tokens=60, token_delay=0.02, reserve_units=4, watch=True
    )
    with ServerProcess(config) as proc:
        proc.start()
        yield proc


def test_ses_36_mppx_early_stop_close_captures_what_was_delivered(
    devnet_clean: Devnet, slow_server: ServerProcess, payer: LocalAccount
) -> None:
    """The TypeScript client stops reading after 5 of 60 tokens and closes with a voucher from
    the last receipt it saw (below what the server delivered): the channel ends closed, the
    payee holding exactly what the server recorded as delivered and the payer the rest
    (AMB-02 as decided here: a short close is accepted and captures `spent`)."""
    token = devnet_clean.token
    view = devnet_clean.chain()
    assert view.balance_of(token, devnet_clean.escrow) == 0  # a fresh escrow per test (revert)
    events = run_mppx_client(
        {
            "url": slow_server.url,
            "rpcUrl": devnet_clean.rpc_url,
            "privateKey": "0x" + bytes(payer.key).hex(),
            "chainId": devnet_clean.chain_id,
            "maxDeposit": "1",
            "stopAfter": 5,
        }
    )
    messages = [e for e in events if e["kind"] == "message"]
    assert len(messages) == 5
    close = next(e for e in events if e["kind"] == "close")
    cid = close["channelId"]
    onchain = view.read_channel(devnet_clean.escrow, cid)
    assert onchain.finalized
    state = SqliteStore(slow_server.config["db"]).get(cid)
    assert state is not None and state.finalized
    assert onchain.settled == state.settled == state.spent  # exactly what was delivered
    assert 5 * PRICE <= onchain.settled < 60 * PRICE  # what was sent, not the whole stream
    assert view.balance_of(token, devnet_clean.escrow) == 0  # the rest went back to the payer


def test_ses_40_mppx_voucher_for_unknown_channel_gets_410(
    devnet_clean: Devnet, server: ServerProcess
) -> None:
    """SES-40/AMB-04 (docs/development.md: after a refused open mppx sends vouchers for a channel
    that is not on chain): a bodyless voucher POST for an unknown channel → 410 problem+json
    with a fresh challenge, not a 500."""
    import httpx

    from mpp.core import Credential, parse_challenge
    from mpp.session.voucher import sign_voucher

    first = httpx.get(server.url, timeout=5)
    assert first.status_code == 402
    challenge = parse_challenge(first.headers.get_list("www-authenticate"))
    cid = "0x" + os.urandom(32).hex()
    key = "0x" + "11" * 32
    sig = sign_voucher(key, cid, 10, chain_id=devnet_clean.chain_id, escrow=devnet_clean.escrow)
    payload = {"action": "voucher", "channelId": cid, "cumulativeAmount": "10", "signature": sig}
    auth = Credential(challenge, payload).to_header()
    answer = httpx.post(
        server.url, headers={"authorization": auth, "accept": "text/event-stream"}, timeout=5
    )
    assert answer.status_code == 410
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"].endswith("session/channel-not-found")
    assert parse_challenge(answer.headers.get_list("www-authenticate")).method == "tempo"


@pytest.mark.timeout(180)
def test_ses_42_mppx_streams_240_tokens_with_a_voucher_per_chunk(
    devnet_clean: Devnet, payee: LocalAccount, payer: LocalAccount, tmp_path: Path
) -> None:
    """SES-42 as decided: the TypeScript client answering one need-voucher per token (reserve 1,
    no pacing) streams 240 tokens to the end with the default failure rate limit on. The old
    per-channel voucher limit (10/s) answered its 13th voucher with 429 and the stream died."""
    tokens = 240
    config = server_config(
        devnet_clean, payee, tmp_path, suggested_deposit=10 * tokens * PRICE, tokens=tokens,
        failure_rate=10.0,  # PaymentGate's default
    )  # fmt: skip
    with ServerProcess(config) as server:
        server.start()
        events = run_mppx_client(
            {
                "url": server.url,
                "rpcUrl": devnet_clean.rpc_url,
                "privateKey": "0x" + bytes(payer.key).hex(),
                "chainId": devnet_clean.chain_id,
                "maxDeposit": "1",
            },
            timeout=150,
        )
        messages = [e["data"] for e in events if e["kind"] == "message"]
        assert messages == [f"tok-{i}" for i in range(tokens)]
        requests = [e for e in events if e["kind"] == "request"]
        assert all(r["status"] != 429 for r in requests)
        vouchers = [r for r in requests if r["action"] == "voucher" and r["method"] == "POST"]
        assert len(vouchers) >= 100  # really one per chunk, far above 10/s
        cid = next(e for e in events if e["kind"] == "close")["channelId"]
        state = SqliteStore(config["db"]).get(cid)
        assert state is not None and state.finalized and state.spent == tokens * PRICE
