"""Fault runs, short form (the long form is scripts/fault_run.py).

1. SIGKILL the paid server at random points during several concurrent paid streams, restart it
   on the same SQLite store, finish every stream and close every channel: on chain the payee
   received exactly the recorded `spent`, and no client paid for more than one undelivered
   token per crash that cut its stream (SES-25/28, docs/development.md).
2. The RPC endpoint goes away (a TCP proxy in front of anvil refuses): the server answers 503
   with Retry-After (never 500) where it needs the chain, keeps accepting vouchers for known
   channels, and loses none of them: the close after the outage captures all of it.
3. A client disconnects mid-stream: `spent` equals what was delivered.
4. The whole lifecycle under SIGKILL with settlement on (a small threshold, the chain watcher
   running): kills while channels open through the server, while vouchers stream, while the
   server settles and while it closes. Every channel ends finalized on chain with the payee
   holding ≥ what was delivered and ≤ delivered + one lookahead window per crash, exactly the
   server's recorded `spent` (SES-25, SES-28, SES-36).

Rows: SES-25, SES-26, SES-28, SES-31, SES-36, AMB-02, CORE-29/31 (Retry-After).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount

from mpp.chain.devnet import Devnet
from mpp.core import Credential, parse_challenge
from mpp.session.voucher import sign_voucher
from mpp.store.sqlite import SqliteStore
from tests.faults.client import FaultClient
from tests.faults.harness import ServerProcess, TcpProxy

PRICE = 10
DEPOSIT = 100_000


def server_config(devnet: Devnet, payee: LocalAccount, db: Path, **extra: Any) -> dict[str, Any]:
    config = {
        "rpc_url": devnet.rpc_url,
        "chain_id": devnet.chain_id,
        "escrow": devnet.escrow,
        "token": devnet.token,
        "payee_key": "0x" + bytes(payee.key).hex(),
        "db": str(db),
        "secret": "faults-secret-0123456789abcdef-0123456789",
        "price": PRICE,
        "suggested_deposit": DEPOSIT,
        "voucher_timeout": 15.0,
        "reserve_units": 1,
    }
    config.update(extra)
    return config


def open_clients(devnet: Devnet, payee: str, url: str, count: int) -> list[FaultClient]:
    """`count` funded payers, each with a channel opened on chain to `payee`."""
    clients = []
    for account in devnet.new_accounts(count, amount=2 * DEPOSIT + 10**6):
        key = "0x" + bytes(account.key).hex()
        cid, _ = devnet.chain(key).open_channel(
            devnet.escrow, token=devnet.token, payee=payee, deposit=DEPOSIT
        )
        clients.append(
            FaultClient(
                url=url,
                key=key,
                payer=account.address,
                channel_id=cid,
                escrow=devnet.escrow,
                chain_id=devnet.chain_id,
                price=PRICE,
            )
        )
    return clients


@dataclass
class Outcome:
    client: FaultClient
    spent: int  # recorded by the server at close
    settled: int  # on chain after close
    cuts: int


def check_closed(
    devnet: Devnet, db: str, clients: list[FaultClient], crashes: int
) -> list[Outcome]:
    """Each channel: finalized on chain with settled == recorded spent; overpay ≤ 1 token/cut."""
    store = SqliteStore(db)
    view = devnet.chain()
    out = []
    for c in clients:
        state = store.get(c.channel_id)
        assert state is not None and state.finalized, c.channel_id
        onchain = view.read_channel(devnet.escrow, c.channel_id)
        assert onchain.finalized
        assert onchain.settled == state.spent, (onchain.settled, state.spent)
        overpaid = state.spent - c.delivered * PRICE
        assert overpaid >= 0, "served tokens that were never charged"
        assert overpaid <= min(c.cut, crashes) * PRICE, (overpaid, c.cut, crashes)
        out.append(Outcome(c, state.spent, onchain.settled, c.cut))
    return out


def run_with_crashes(
    devnet: Devnet,
    payee: LocalAccount,
    db: Path,
    *,
    clients_n: int,
    tokens: int,
    crashes: int,
    token_delay: float,
    seed: int,
    deadline_s: float = 120.0,
) -> tuple[list[Outcome], int]:
    """Fault run 1 (shared by the long form in scripts/fault_run.py)."""
    rng = random.Random(seed)
    config = server_config(devnet, payee, db, token_delay=token_delay)
    deadline = time.monotonic() + deadline_s
    with ServerProcess(config) as server:
        server.start()
        clients = open_clients(devnet, payee.address, server.url, clients_n)
        errors: list[BaseException] = []

        def work(c: FaultClient) -> None:
            try:
                c.run(tokens, deadline=deadline)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(c,), daemon=True) for c in clients]
        for t in threads:
            t.start()
        done = 0
        stream_time = tokens * token_delay
        for _ in range(crashes):
            # Kill while tokens are flowing (a loaded machine can be slow to start streams):
            # wait, bounded, for progress since the last restart, then at a random moment.
            before = [c.delivered for c in clients]
            flowing_by = time.monotonic() + 20
            while time.monotonic() < flowing_by and not any(
                b < c.delivered < tokens for c, b in zip(clients, before, strict=True)
            ):
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, max(0.05, stream_time / 4)))
            if all(not t.is_alive() for t in threads):
                break
            server.kill()
            done += 1
            time.sleep(rng.uniform(0.0, 0.3))
            server.start()
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        assert not errors, errors
        assert all(not t.is_alive() for t in threads), "a client did not finish"
        assert all(c.delivered == tokens for c in clients)
        for c in clients:
            c.close(deadline=deadline)
        server.stop()
    return check_closed(devnet, str(db), clients, done), done


@dataclass
class LifecycleRun:
    channels: int
    kills: dict[str, int]  # phase → SIGKILLs
    delivered: int  # Σ tokens received by clients, in base units
    captured: int  # Σ settled on chain
    largest_excess: int  # max over channels of captured − delivered, base units
    window: int  # one lookahead window, base units


def run_lifecycle_with_crashes(
    devnet: Devnet,
    payee: LocalAccount,
    db: Path,
    *,
    clients_n: int,
    tokens: int,
    stream_kills: int,
    seed: int,
    window_units: int = 4,
    deadline_s: float = 150.0,
) -> LifecycleRun:
    """Fault run 4 (shared by scripts/fault_run.py): SIGKILLs across open, vouchers, settle and
    close with settlement on and the watcher running."""
    from mpp.session.payer import Payer
    from mpp.session.terms import SessionTerms

    rng = random.Random(seed)
    config = server_config(
        devnet,
        payee,
        db,
        token_delay=0.02,
        reserve_units=window_units,
        watch=True,
        settle_interval=0.3,
        settlement={"threshold": 3 * PRICE, "interval": 1, "idle_close": None},
    )
    deadline = time.monotonic() + deadline_s
    kills = {"open": 0, "stream": 0, "settle": 0, "close": 0}
    errors: list[BaseException] = []

    def in_threads(work: Any, clients: list[FaultClient]) -> list[threading.Thread]:
        def guarded(c: FaultClient) -> None:
            try:
                work(c)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=guarded, args=(c,), daemon=True) for c in clients]
        for t in threads:
            t.start()
        return threads

    def kill_during(phase: str, threads: list[threading.Thread] | None, delay: float) -> None:
        time.sleep(rng.uniform(0.0, delay))
        if threads is None or any(t.is_alive() for t in threads):
            server.kill()
            kills[phase] += 1
            time.sleep(rng.uniform(0.0, 0.3))
            server.start()

    def join(threads: list[threading.Thread]) -> None:
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        assert not errors, errors
        assert all(not t.is_alive() for t in threads), "a client did not finish"

    with ServerProcess(config) as server:
        server.start()
        challenge = FaultClient(server.url, "", "", "", "", 0, PRICE)._fetch_challenge()
        terms = SessionTerms.from_request(challenge.request)
        clients, payloads = [], []
        for i, account in enumerate(devnet.new_accounts(clients_n, amount=2 * DEPOSIT + 10**6)):
            key = "0x" + bytes(account.key).hex()
            payer = Payer(key, records_path=db.with_name(f"payer-{i}.db"), chain=devnet.chain())
            payload = payer.open_payload(terms, DEPOSIT, expires=int(time.time()) + 60)
            payloads.append(payload)
            clients.append(
                FaultClient(
                    url=server.url,
                    key=key,
                    payer=account.address,
                    channel_id=payload["channelId"],
                    escrow=devnet.escrow,
                    chain_id=devnet.chain_id,
                    price=PRICE,
                )
            )
        by_id = {c.channel_id: p for c, p in zip(clients, payloads, strict=True)}
        threads = in_threads(
            lambda c: c.open_via_server(by_id[c.channel_id], deadline=deadline), clients
        )
        kill_during("open", threads, 0.05)
        join(threads)

        threads = in_threads(lambda c: c.run(tokens, deadline=deadline), clients)
        for _ in range(stream_kills):
            kill_during("stream", threads, tokens * 0.02 / 2)
        join(threads)
        assert all(c.delivered == tokens for c in clients)
        # Settlement rounds run every 0.3 s over channels past the threshold: a kill among them.
        kill_during("settle", None, 0.6)
        time.sleep(1.0)

        threads = in_threads(lambda c: c.close(deadline=deadline), clients)
        kill_during("close", threads, 0.05)
        join(threads)
        # The watcher finalizes rows whose close landed just before a kill.
        finalized_by = time.monotonic() + 20
        store = SqliteStore(str(db))
        while time.monotonic() < finalized_by and not all(
            (st := store.get(c.channel_id)) is not None and st.finalized for c in clients
        ):
            time.sleep(0.1)
        server.stop()

    store, view = SqliteStore(str(db)), devnet.chain()
    crashes = sum(kills.values())
    window = window_units * PRICE
    largest = captured_total = 0
    for c in clients:
        state = store.get(c.channel_id)
        onchain = view.read_channel(devnet.escrow, c.channel_id)
        assert onchain.finalized, c.channel_id
        assert state is not None and state.finalized, c.channel_id
        delivered = c.delivered * PRICE
        assert onchain.settled == state.spent == state.settled, (onchain.settled, state.spent)
        assert onchain.settled >= delivered, "a payer took back what it was served"
        assert onchain.settled - delivered <= crashes * window, (onchain.settled, delivered)
        largest = max(largest, onchain.settled - delivered)
        captured_total += onchain.settled
    return LifecycleRun(
        channels=len(clients),
        kills=kills,
        delivered=sum(c.delivered for c in clients) * PRICE,
        captured=captured_total,
        largest_excess=largest,
        window=window,
    )


@pytest.mark.timeout(240)
def test_ses_28_sigkill_across_open_voucher_settle_close(
    devnet_clean: Devnet, payee: LocalAccount, tmp_path: Path
) -> None:
    """SES-25/28/36: SIGKILLs while channels open, while vouchers stream with settlement
    running, and while they close; every channel ends finalized with the payee holding its
    recorded `spent`, between delivered and delivered + one window per crash."""
    seed = int(os.environ.get("MPP_FAULT_SEED", "4321"))
    run = run_lifecycle_with_crashes(
        devnet_clean,
        payee,
        tmp_path / "server.db",
        clients_n=3,
        tokens=30,
        stream_kills=2,
        seed=seed,
    )
    assert run.kills["stream"] >= 1
    assert run.captured >= run.delivered


@pytest.mark.timeout(180)
def test_ses_28_sigkill_during_streams(
    devnet_clean: Devnet, payee: LocalAccount, tmp_path: Path
) -> None:
    """SES-25/28, SES-36: SIGKILL during 4 concurrent paid streams (2 crashes), restart on the
    same store, finish, close: settled == recorded spent; overpay ≤ 1 token per cut stream."""
    seed = int(os.environ.get("MPP_FAULT_SEED", "1234"))
    outcomes, crashes = run_with_crashes(
        devnet_clean,
        payee,
        tmp_path / "server.db",
        clients_n=4,
        tokens=30,
        crashes=2,
        token_delay=0.02,
        seed=seed,
    )
    assert crashes >= 1
    assert sum(o.cuts for o in outcomes) >= 1  # the kills really cut streams


@pytest.fixture
def proxied_server(
    devnet_clean: Devnet, payee: LocalAccount, tmp_path: Path
) -> Iterator[tuple[ServerProcess, TcpProxy]]:
    proxy = TcpProxy(devnet_clean.port)
    config = server_config(devnet_clean, payee, tmp_path / "server.db", refresh_ttl=1)
    config["rpc_url"] = proxy.url
    try:
        with ServerProcess(config) as server:
            server.start()
            yield server, proxy
    finally:
        proxy.close()


def _voucher_header(c: FaultClient, cid: str, amount: int) -> str:
    assert c.challenge is not None
    sig = sign_voucher(c.key, cid, amount, chain_id=c.chain_id, escrow=c.escrow)
    payload = {
        "action": "voucher",
        "channelId": cid,
        "cumulativeAmount": str(amount),
        "signature": sig,
    }
    return Credential(c.challenge, payload, source=c.source).to_header()


@pytest.mark.timeout(120)
def test_core_31_rpc_outage_503_and_no_voucher_lost(
    devnet_clean: Devnet, proxied_server: tuple[ServerProcess, TcpProxy]
) -> None:
    """Fault run 2: RPC down → 503 + Retry-After where the chain is needed, never 500; vouchers
    for known channels keep being accepted and none is lost (the later close captures them)."""
    server, proxy = proxied_server
    payee = server.config["payee_key"]
    from eth_account import Account

    (client,) = open_clients(devnet_clean, Account.from_key(payee).address, server.url, 1)
    client.run(5, deadline=time.monotonic() + 30)  # adopts the channel while the RPC is up

    proxy.down()
    time.sleep(1.5)  # past refresh_ttl: the server's refresh attempts now fail
    client.run(10, deadline=time.monotonic() + 30)  # vouchers accepted from the store
    assert client.delivered == 15

    # A channel the server has never seen needs the chain: 503 + Retry-After, problem+json.
    unknown = "0x" + os.urandom(32).hex()
    answer = httpx.post(
        server.url,
        headers={"authorization": _voucher_header(client, unknown, PRICE)},
        timeout=30,
    )
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"]
    assert answer.headers["content-type"] == "application/problem+json"
    proxy.up()
    client.close(deadline=time.monotonic() + 30)
    server.stop()
    (outcome,) = check_closed(devnet_clean, server.config["db"], [client], crashes=0)
    assert outcome.spent == 15 * PRICE == outcome.settled


@pytest.mark.timeout(120)
def test_ses_36_close_during_rpc_outage_can_be_retried(
    devnet_clean: Devnet, proxied_server: tuple[ServerProcess, TcpProxy]
) -> None:
    """Fault run 2b (SES-36, CORE-31): a close attempted while the RPC is down is answered 503 +
    Retry-After (not 500); once the RPC is back the client's retry closes the channel, capturing
    every voucher accepted during the outage."""
    server, proxy = proxied_server
    from eth_account import Account

    payee = Account.from_key(server.config["payee_key"]).address
    (client,) = open_clients(devnet_clean, payee, server.url, 1)
    client.run(5, deadline=time.monotonic() + 30)
    proxy.down()
    client.run(5, deadline=time.monotonic() + 30)
    close_auth = client._credential("close", client.last_spent)
    answer = httpx.post(server.url, headers={"authorization": close_auth}, timeout=30)
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"]
    proxy.up()
    client.close(deadline=time.monotonic() + 30)
    server.stop()
    (outcome,) = check_closed(devnet_clean, server.config["db"], [client], crashes=0)
    assert outcome.spent == 10 * PRICE == outcome.settled


@pytest.mark.timeout(120)
def test_ses_28_client_disconnect_spent_equals_delivered(
    devnet_clean: Devnet, payee: LocalAccount, tmp_path: Path
) -> None:
    """Fault run 3: a client that hangs up mid-stream pays for what it received, not for the
    rest of the stream the handler would have produced."""
    config = server_config(devnet_clean, payee, tmp_path / "server.db", token_delay=0.05)
    with ServerProcess(config) as server:
        server.start()
        (client,) = open_clients(devnet_clean, payee.address, server.url, 1)
        got = client.stream_once(40, stop_after=5)
        assert got == 5
        time.sleep(40 * 0.05 + 1.0)  # the whole stream would be over by now
        store = SqliteStore(server.config["db"])
        state = store.get(client.channel_id)
        assert state is not None
        assert state.spent == client.delivered * PRICE, (state.spent, client.delivered)
        client.close(deadline=time.monotonic() + 30)
        server.stop()
    check_closed(devnet_clean, server.config["db"], [client], crashes=0)


def test_harness_parse_challenge_roundtrip(
    devnet_clean: Devnet, payee: LocalAccount, tmp_path: Path
) -> None:
    """The fault harness itself: the server process answers 402 with a tempo/session challenge."""
    config = server_config(devnet_clean, payee, tmp_path / "server.db")
    with ServerProcess(config) as server:
        server.start()
        answer = httpx.get(server.url, timeout=5)
        assert answer.status_code == 402
        challenge = parse_challenge(answer.headers.get_list("www-authenticate"))
        assert (challenge.method, challenge.intent) == ("tempo", "session")
