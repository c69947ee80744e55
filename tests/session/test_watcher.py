"""The chain watcher on anvil (Tempo mode): the payee keeps what it earned when a payer
force-closes, also across downtime and RPC outages, and capture is exact.

Row IDs: SES-21 (no service once a close is requested), SES-36 (capture exactly what was
consumed), SES-38 (settled within the grace period), SES-43 (watch CloseRequested/ChannelClosed,
catch up after downtime), SES-44 (idle close), ESC-16/17 (capture calls).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from mpp.chain.devnet import Devnet
from mpp.chain.web3chain import Web3Chain
from mpp.core.errors import ChannelFinalized
from mpp.session.engine import SessionServer
from mpp.session.ports import ChannelEvent
from mpp.session.settlement import SettlementPolicy
from mpp.session.watcher import ChainWatcher
from mpp.store.sqlite import SqliteStore
from tests.faults.harness import TcpProxy
from tests.session._workers import TOKEN, Env, fee_of

DEPOSIT = 10_000


@pytest.fixture
def env(devnet_clean: Devnet, payer: LocalAccount, payee: LocalAccount, tmp_path: Path) -> Env:
    return Env(devnet_clean, "0x" + payer.key.hex(), "0x" + payee.key.hex(), tmp_path)


def _open_and_spend(env: Env, server: SessionServer, *, signed: int, spent: int) -> str:
    """A channel with a voucher for `signed` (prepay-ahead) of which `spent` was delivered."""
    payer = env.client()
    opened = server.handle(
        payer.open_payload(server.terms, DEPOSIT, expires=env.expires()),
        challenge_id="c",
        challenge_expires=env.expires(),
    )
    cid = opened.state.channel_id
    server.handle(payer.voucher_payload(cid, signed), challenge_id="c")
    server.charge(cid, spent)
    return cid


def _payer_chain(env: Env) -> Web3Chain:
    return env.devnet.chain(env.payer_key, fee_token=TOKEN)


def test_ses_38_close_request_answered_by_an_exact_close(env: Env) -> None:
    """requestClose while the server runs: the next watcher round stops the channel (SES-21)
    and closes it capturing exactly `spent` (not the prepaid voucher), refunding the rest at
    once, long before the grace period ends."""
    server = env.server(settlement=SettlementPolicy.off())
    cid = _open_and_spend(env, server, signed=5_000, spent=1_234)
    watcher = ChainWatcher(server)
    watcher.poll()  # cursor set; nothing to do
    payer_before, payee_before = env.balance(env.payer), env.balance(env.payee)

    request = _payer_chain(env).request_close(env.devnet.escrow, cid)
    watcher.poll()

    onchain = env.devnet.chain().read_channel(env.devnet.escrow, cid)
    assert onchain.finalized and onchain.settled == 1_234
    fee = fee_of(env.devnet, request.tx_hash, env.payer)
    assert env.balance(env.payer) - payer_before == DEPOSIT - 1_234 - fee
    payee_fees = env.balance(env.payee) - payee_before - 1_234
    assert payee_fees <= 0  # the payee got exactly 1,234 minus its own gas
    state = server.store.get(cid)
    assert state is not None and state.finalized and state.settled == 1_234
    with pytest.raises(ChannelFinalized):
        server.handle(env.client().voucher_payload(cid, 6_000), challenge_id="c")
    assert watcher.status().lag_blocks == 0 and watcher.status().healthy


def test_ses_43_catch_up_after_downtime(env: Env, tmp_path: Path) -> None:
    """requestClose while the server is down, then a restart on the same store: the first
    round re-reads every live channel and closes it, capturing exactly `spent`."""
    db = str(tmp_path / "server.db")
    server = env.server(SqliteStore(db), settlement=SettlementPolicy.off())
    cid = _open_and_spend(env, server, signed=3_000, spent=2_000)
    ChainWatcher(server).poll()  # a cursor exists from the first run
    server.store.close()  # "down"

    _payer_chain(env).request_close(env.devnet.escrow, cid)
    env.devnet.increase_time(600)  # ten minutes of the grace period pass while down

    restarted = env.server(SqliteStore(db), settlement=SettlementPolicy.off())
    ChainWatcher(restarted).poll()
    onchain = env.devnet.chain().read_channel(env.devnet.escrow, cid)
    assert onchain.finalized and onchain.settled == 2_000
    restarted.store.close()


def test_ses_43_cursor_follows_events_and_top_up_refreshes_deposit(env: Env) -> None:
    """The block cursor is kept in the store and moves with the head; an on-chain top-up (by
    the payer, not through the server) raises the stored deposit and reaches `on_event`."""
    server = env.server(settlement=SettlementPolicy.off())
    cid = _open_and_spend(env, server, signed=100, spent=100)
    seen: list[ChannelEvent] = []
    watcher = ChainWatcher(server, on_event=seen.append)
    watcher.poll()
    head = env.devnet.chain().block_number()
    assert watcher.status().cursor == head

    _payer_chain(env).top_up(env.devnet.escrow, cid, 7_000, token=TOKEN)
    watcher.poll()
    state = server.store.get(cid)
    assert state is not None and state.deposit == DEPOSIT + 7_000
    assert [e.name for e in seen] == ["TopUp"] and seen[0].channel_id == cid
    assert watcher.status().cursor == env.devnet.chain().block_number()


def test_ses_43_close_by_anyone_finalizes_the_row(env: Env) -> None:
    """A close by the payee's other tooling (here: a direct escrow call) finalizes the row."""
    server = env.server(settlement=SettlementPolicy.off())
    cid = _open_and_spend(env, server, signed=500, spent=400)
    watcher = ChainWatcher(server)
    watcher.poll()
    other = env.server(settlement=SettlementPolicy.off())  # another process, another store
    other.store.update(cid, lambda cur: _copy(server, cid))
    other.close_channel(cid)
    watcher.poll()
    state = server.store.get(cid)
    assert state is not None and state.finalized and state.settled == 400


def _copy(server: SessionServer, cid: str) -> Any:
    from mpp.session.ports import Mutation

    return Mutation(server.store.get(cid))


def test_ses_38_rpc_outage_during_grace_settles_when_it_returns(env: Env) -> None:
    """The RPC is unreachable when the close request lands: the watcher thread backs off and
    reports its failures, never crashes, and closes the channel once the RPC is back."""
    proxy = TcpProxy(int(env.devnet.rpc_url.rsplit(":", 1)[1]))
    try:
        chain = Web3Chain(
            proxy.url, account=env.payee_key, fee_token=TOKEN, chain_id=env.devnet.chain_id,
            request_timeout=1.0,
        )  # fmt: skip
        server = SessionServer(
            env.server().store, chain, env.terms(), settlement=SettlementPolicy.off(),
            now=lambda: env.clock[0],
        )  # fmt: skip
        cid = _open_and_spend(env, server, signed=900, spent=850)
        with ChainWatcher(server, poll_interval=0.05, max_backoff=0.2) as watcher:
            _wait(lambda: watcher.status().healthy)
            proxy.down()
            _payer_chain(env).request_close(env.devnet.escrow, cid)
            _wait(lambda: watcher.status().failures >= 2)
            assert watcher.status().running
            proxy.up()
            _wait(lambda: env.devnet.chain().read_channel(env.devnet.escrow, cid).finalized)
        onchain = env.devnet.chain().read_channel(env.devnet.escrow, cid)
        assert onchain.settled == 850
    finally:
        proxy.close()


def test_ses_44_idle_channels_are_closed_exactly(env: Env) -> None:
    server = env.server(settlement=SettlementPolicy(threshold=None, interval=None, idle_close=60))
    cid = _open_and_spend(env, server, signed=2_000, spent=777)
    assert server.maybe_settle() == {}
    env.clock[0] += 61
    closed = server.maybe_settle()
    assert list(closed) == [cid]
    onchain = env.devnet.chain().read_channel(env.devnet.escrow, cid)
    assert onchain.finalized and onchain.settled == 777


def test_ses_36_threshold_settle_captures_spent_not_the_voucher(env: Env) -> None:
    policy = SettlementPolicy(threshold=1_000, interval=None, idle_close=None)
    server = env.server(settlement=policy)
    cid = _open_and_spend(env, server, signed=6_000, spent=999)
    assert server.maybe_settle() == {}
    server.charge(cid, 1)
    assert list(server.maybe_settle()) == [cid]
    onchain = env.devnet.chain().read_channel(env.devnet.escrow, cid)
    assert onchain.settled == 1_000 and not onchain.finalized
    # the same voucher (6,000) settles again later, once more was delivered
    server.charge(cid, 1_500)
    assert server.settle(cid) is not None
    assert env.devnet.chain().read_channel(env.devnet.escrow, cid).settled == 2_500


def test_ses_21_reserved_units_are_not_delivered_after_a_close_request(env: Env) -> None:
    """Units reserved before the close request stay undelivered (commit refuses) and are
    neither captured nor billed."""
    server = env.server(settlement=SettlementPolicy.off())
    cid = _open_and_spend(env, server, signed=5_000, spent=1_000)
    server.charge(cid, 500, reserve=True)  # a stream's headroom
    assert server.commit(cid, 100)  # delivered
    watcher = ChainWatcher(server)
    watcher.poll()
    _payer_chain(env).request_close(env.devnet.escrow, cid)
    watcher.poll()
    assert not server.commit(cid, 100)  # no more service
    server.release(cid, 400)
    onchain = env.devnet.chain().read_channel(env.devnet.escrow, cid)
    assert onchain.finalized and onchain.settled == 1_100


def _wait(cond: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)
