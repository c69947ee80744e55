"""Payee commands with the server's store: the highest voucher settles (SES-35), a close
captures exactly `spent` when a voucher for it is stored (SES-36, AMB-02); `status` and `list`
show the server's accounting. The scripts in scripts/ are checked on the same setup."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mpp.chain.web3chain import PATH_USD
from mpp.session.engine import SessionServer
from mpp.session.payer import Payer
from mpp.session.terms import SessionTerms
from mpp.store.sqlite import SqliteStore
from tests.cli.conftest import CLI, Env
from tests.cli.test_channel import open_channel

STORE_ROW_KEYS = {"channelId", "escrowContract", "chainId", "payer", "payee", "token", "deposit",
                  "settled", "acceptedCumulative", "spent", "unsettled", "finalized",
                  "closeRequestedAt", "updatedAt"}  # fmt: skip
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(env: Env) -> Iterator[SessionServer]:
    terms = SessionTerms(
        amount=1,
        currency=PATH_USD,
        recipient=env.payee.address,
        escrow_contract=env.devnet.escrow,
        chain_id=env.devnet.chain_id,
    )
    chain = env.devnet.chain(bytes(env.payee.key), fee_token=PATH_USD)
    engine = SessionServer(SqliteStore(str(env.tmp / "server.db")), chain, terms)
    try:
        yield engine
    finally:
        engine.store.close()


def pay(env: Env, server: SessionServer, cid: str, *amounts: int, spend: int) -> None:
    """The payer's vouchers reach the server; the server charges `spend`."""
    payer = Payer(bytes(env.payer.key), records_path=env.records)
    for amount in amounts:
        server.handle(payer.voucher_payload(cid, amount), challenge_id=f"c{amount}")
    server.charge(cid, spend)


def dsn(env: Env) -> str:
    return f"sqlite:{env.tmp / 'server.db'}"


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_store_status_list_settle_close(cli: CLI, env: Env, server: SessionServer) -> None:
    cid = open_channel(cli, env)["channelId"]
    pay(env, server, cid, 300, 700, spend=300)

    status = cli("channel", "status", cid, "--store", dsn(env), "--json").json
    store: dict[str, Any] = status["store"]
    assert store["acceptedCumulative"] == "700" and store["spent"] == "300"
    assert store["unsettled"] == "300" and store["hasVoucher"] is True  # delivered, unsettled

    listed = cli("channel", "list", "--store", dsn(env), "--json").json
    assert listed["source"] == "store"
    (row,) = listed["channels"]
    assert set(row) == STORE_ROW_KEYS and row["acceptedCumulative"] == "700"
    human = cli("channel", "list", "--store", dsn(env))
    assert "1 channel(s)" in human.out and "ACCEPTED" in human.out

    settled = cli("channel", "settle", cid, "--store", dsn(env), "--json").json
    assert settled["settled"] == "300" and settled["txHash"]  # exactly spent (SES-36)
    nothing = cli("channel", "settle", cid, "--store", dsn(env))
    assert nothing.code == 0 and nothing.out.startswith("Nothing to settle")

    closed = cli("channel", "close", cid, "--store", dsn(env), "--json").json
    assert (closed["captured"], closed["refund"]) == ("300", "4700")  # settled already: 300
    after = cli("channel", "status", cid, "--store", dsn(env), "--json").json
    assert after["finalized"] and after["store"]["finalized"]


def test_store_close_captures_spent_not_accepted(cli: CLI, env: Env, server: SessionServer) -> None:
    """SES-36: the highest voucher is for 700, exactly `spent` (300) is captured."""
    cid = open_channel(cli, env)["channelId"]
    pay(env, server, cid, 300, 700, spend=300)
    r = cli("channel", "close", cid, "--store", dsn(env))
    assert r.code == 0 and "captured 0.000300 pathUSD" in r.out and "refunded 0.004700" in r.out


def test_script_settle_over_threshold(cli: CLI, env: Env, server: SessionServer) -> None:
    script = load_script("settle_over_threshold")
    small = open_channel(cli, env)["channelId"]
    big = open_channel(cli, env)["channelId"]
    pay(env, server, small, 100, spend=50)
    pay(env, server, big, 900, spend=900)
    chain = env.devnet.chain(bytes(env.payee.key))
    dry = script.settle_over_threshold(server.store, chain, 500, dry_run=True)
    assert [(s.channel_id, s.tx_hash) for s in dry] == [(big, None)]
    (done,) = script.settle_over_threshold(server.store, chain, 500)
    assert done.channel_id == big and done.unsettled == 900 and done.tx_hash
    assert chain.read_channel(env.devnet.escrow, big).settled == 900
    assert chain.read_channel(env.devnet.escrow, small).settled == 0  # 50 < 500
    assert script.settle_over_threshold(server.store, chain, 500) == []  # nothing left over


def test_script_close_idle_channels(
    cli: CLI, env: Env, server: SessionServer, capsys: pytest.CaptureFixture[str]
) -> None:
    script = load_script("close_idle_channels")
    idle = open_channel(cli, env)["channelId"]
    pay(env, server, idle, 400, spend=400)
    state = server.store.get(idle)
    assert state is not None
    chain = env.devnet.chain(bytes(env.payee.key))
    later = state.updated_at + 11 * 60
    assert script.close_idle_channels(server.store, chain, 30, now=later) == []
    dry = script.close_idle_channels(server.store, chain, 10, now=later, dry_run=True)
    assert [c.tx_hash for c in dry] == [None]
    (closed,) = script.close_idle_channels(server.store, chain, 10, now=later)
    assert closed.channel_id == idle and closed.captured == 400 and closed.tx_hash
    onchain = chain.read_channel(env.devnet.escrow, idle)
    assert onchain.finalized and onchain.settled == 400
    # As a script: nothing idle is left open.
    assert script.main(["--store", dsn(env), "--idle-minutes", "0", "--json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"
