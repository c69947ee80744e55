#!/usr/bin/env python3
"""Fault runs, long form (the short form runs in the test suite: tests/faults/).

    .venv/bin/python scripts/fault_run.py                      # 100 streams, 10 at a time
    .venv/bin/python scripts/fault_run.py --streams 40 --concurrency 8 --crashes 3 --seed 7
    .venv/bin/python scripts/fault_run.py --skip-outage --skip-disconnect
    .venv/bin/python scripts/fault_run.py --skip-sigkill --skip-outage --skip-disconnect

1. SIGKILL: batches of `--concurrency` concurrent paid streams against the paid server
   (tests/faults/paid_server.py, its own process on a SQLite store); `--crashes` SIGKILLs per
   batch at random points, each followed by a restart on the same store; every stream is then
   finished and every channel closed. Checked per channel: on chain the payee received exactly
   the recorded `spent`, and the client paid for at most one undelivered token per crash that
   cut its stream.
2. RPC outage (`--outages` rounds): the RPC goes away behind a TCP proxy; vouchers for known
   channels keep working, an unknown channel gets 503 + Retry-After, nothing is lost.
3. Client disconnects (`--disconnects` rounds): `spent` equals what was delivered.
4. Lifecycle (`--lifecycles` rounds): settlement on (small threshold) and the chain watcher
   running; SIGKILLs while channels open through the server, while vouchers stream and the
   server settles, and while channels close. Checked per channel: finalized on chain, captured
   == recorded spent, delivered ≤ captured ≤ delivered + one lookahead window per crash.

Starts its own anvil (Tempo mode) with our escrow; every process is stopped through its handle.
Exit status 0 when every check held.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mpp.chain.devnet import Devnet  # noqa: E402
from mpp.store.sqlite import SqliteStore  # noqa: E402
from tests.faults.harness import ServerProcess, TcpProxy  # noqa: E402
from tests.faults.test_faults_short import (  # noqa: E402
    PRICE,
    check_closed,
    open_clients,
    run_lifecycle_with_crashes,
    run_with_crashes,
    server_config,
)


def sigkill_runs(devnet: Devnet, tmp: Path, args: argparse.Namespace) -> None:
    (payee,) = devnet.new_accounts(1, amount=10_000 * 10**6)
    batches = max(1, args.streams // args.concurrency)
    crashes = cuts = overpaid_tokens = channels = bound = 0
    started = time.monotonic()
    for batch in range(batches):
        outcomes, done = run_with_crashes(
            devnet,
            payee,
            tmp / "server.db",  # one store across batches: restarts see old channels too
            clients_n=args.concurrency,
            tokens=args.tokens,
            crashes=args.crashes,
            token_delay=args.token_delay,
            seed=args.seed + batch,
            deadline_s=args.batch_timeout,
        )
        crashes += done
        cuts += sum(o.cuts for o in outcomes)
        bound += sum(min(o.cuts, done) for o in outcomes)
        overpaid_tokens += sum((o.spent - o.client.delivered * PRICE) // PRICE for o in outcomes)
        channels += len(outcomes)
        print(
            f"batch {batch + 1}/{batches}: {len(outcomes)} streams, {done} crashes, "
            f"{sum(o.cuts for o in outcomes)} cut streams, all channels closed exactly",
            flush=True,
        )
    print(
        f"SIGKILL: {channels} streams, {crashes} crashes, {cuts} cut streams, "
        f"{overpaid_tokens} charged-but-undelivered tokens (bound: {bound}), "
        f"{time.monotonic() - started:.1f} s"
    )


def outage_runs(devnet: Devnet, tmp: Path, rounds: int) -> None:
    import httpx

    from tests.faults.test_faults_short import _voucher_header

    for i in range(rounds):
        (payee,) = devnet.new_accounts(1)
        proxy = TcpProxy(devnet.port)
        config = server_config(devnet, payee, tmp / f"outage-{i}.db", refresh_ttl=1)
        config["rpc_url"] = proxy.url
        try:
            with ServerProcess(config) as server:
                server.start()
                (client,) = open_clients(devnet, payee.address, server.url, 1)
                client.run(5, deadline=time.monotonic() + 30)
                proxy.down()
                time.sleep(1.2)
                client.run(10, deadline=time.monotonic() + 30)
                unknown = "0x" + random.randbytes(32).hex()
                answer = httpx.post(
                    server.url,
                    headers={"authorization": _voucher_header(client, unknown, PRICE)},
                    timeout=30,
                )
                assert answer.status_code == 503 and answer.headers.get("retry-after"), answer
                proxy.up()
                client.close(deadline=time.monotonic() + 30)
                server.stop()
            (outcome,) = check_closed(devnet, config["db"], [client], crashes=0)
            assert outcome.spent == 15 * PRICE
        finally:
            proxy.close()
        print(f"outage {i + 1}/{rounds}: 503 + Retry-After, no voucher lost", flush=True)


def disconnect_runs(devnet: Devnet, tmp: Path, rounds: int, seed: int) -> None:
    rng = random.Random(seed)
    (payee,) = devnet.new_accounts(1)
    config = server_config(devnet, payee, tmp / "disconnect.db", token_delay=0.02)
    with ServerProcess(config) as server:
        server.start()
        clients = open_clients(devnet, payee.address, server.url, rounds)
        for c in clients:
            c.stream_once(50, stop_after=rng.randint(1, 40))
        time.sleep(50 * 0.02 + 1.0)
        store = SqliteStore(config["db"])
        for c in clients:
            state = store.get(c.channel_id)
            assert state is not None
            assert state.spent == c.delivered * PRICE, (state.spent, c.delivered)
            c.close(deadline=time.monotonic() + 60)
        server.stop()
    check_closed(devnet, config["db"], clients, crashes=0)
    print(f"disconnects: {rounds} streams cut by the client, spent == delivered for each")


def lifecycle_runs(devnet: Devnet, tmp: Path, args: argparse.Namespace) -> None:
    kills: dict[str, int] = {}
    channels = delivered = captured = largest = window = 0
    started = time.monotonic()
    for i in range(args.lifecycles):
        (payee,) = devnet.new_accounts(1)
        run = run_lifecycle_with_crashes(
            devnet,
            payee,
            tmp / f"lifecycle-{i}.db",
            clients_n=args.concurrency,
            tokens=args.tokens,
            stream_kills=args.crashes,
            seed=args.seed + 1000 + i,
            deadline_s=args.batch_timeout,
        )
        for phase, n in run.kills.items():
            kills[phase] = kills.get(phase, 0) + n
        channels += run.channels
        delivered += run.delivered
        captured += run.captured
        largest = max(largest, run.largest_excess)
        window = run.window
        print(f"lifecycle {i + 1}/{args.lifecycles}: {run.kills}, all checks held", flush=True)
    print(
        f"lifecycle: {channels} channels, kills {kills} ({sum(kills.values())} total), "
        f"Σ delivered {delivered}, Σ captured {captured}, largest excess {largest} base units "
        f"(one window = {window}), {time.monotonic() - started:.1f} s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--crashes", type=int, default=3, help="SIGKILLs per batch")
    parser.add_argument("--tokens", type=int, default=40, help="tokens per stream")
    parser.add_argument("--token-delay", type=float, default=0.02)
    parser.add_argument("--batch-timeout", type=float, default=300.0)
    parser.add_argument("--outages", type=int, default=3)
    parser.add_argument("--disconnects", type=int, default=10)
    parser.add_argument("--lifecycles", type=int, default=5)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--skip-sigkill", action="store_true")
    parser.add_argument("--skip-outage", action="store_true")
    parser.add_argument("--skip-disconnect", action="store_true")
    parser.add_argument("--skip-lifecycle", action="store_true")
    args = parser.parse_args()
    print(f"seed {args.seed}", flush=True)
    with tempfile.TemporaryDirectory(prefix="mpp-faults-") as tmp_dir, Devnet.start() as devnet:
        tmp = Path(tmp_dir)
        if not args.skip_sigkill:
            sigkill_runs(devnet, tmp, args)
        if not args.skip_outage:
            outage_runs(devnet, tmp, args.outages)
        if not args.skip_disconnect:
            disconnect_runs(devnet, tmp, args.disconnects, args.seed)
        if not args.skip_lifecycle:
            lifecycle_runs(devnet, tmp, args)
    print("all fault checks held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
