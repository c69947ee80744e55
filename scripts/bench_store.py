"""Store update throughput, single thread: a voucher-acceptance-like decide + one audit row.

    .venv/bin/python scripts/bench_store.py [--n 5000] [--pg DSN | --pg-temp]

Each op is `store.update(channel, decide)` where decide checks the invariant and the voucher's
monotonicity, builds the new state and appends one VoucherRecord (what the engine does per
voucher, minus signature verification). "charge" ops raise `spent` without an audit row.
SQLite runs on a temp file with synchronous=FULL (the default) and NORMAL for comparison;
PostgreSQL runs against --pg DSN, MPP_TEST_PG_DSN, or a throwaway cluster with --pg-temp.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpp.session.ports import ChannelState, Mutation, Store, VoucherRecord
from mpp.store.memory import MemoryStore
from mpp.store.sqlite import SqliteStore

CID = "0x" + "ab" * 32
SIG = "0x" + "cd" * 65


def _initial(cur: ChannelState | None) -> Mutation:
    z = "0x" + "00" * 20
    return Mutation(
        ChannelState(CID, "0x" + "ee" * 20, 42431, "0x" + "aa" * 20, "0x" + "bb" * 20,
                     "0x" + "cc" * 20, z, 10**30, 0, 0, 0, None)
    )  # fmt: skip


def accept_op(i: int) -> Callable[[ChannelState | None], Mutation]:
    def decide(cur: ChannelState | None) -> Mutation:
        assert cur is not None and cur.spent <= cur.accepted_cumulative <= cur.deposit
        cum = cur.accepted_cumulative + 1000
        if cum > cur.deposit:
            raise ValueError("amount-exceeds-deposit")
        state = dataclasses.replace(cur, accepted_cumulative=cum, voucher_signature=SIG)
        return Mutation(state, (VoucherRecord(CID, cum, SIG, f"challenge-{i % 7}", 1_700_000_000),))

    return decide


def charge(cur: ChannelState | None) -> Mutation:
    assert cur is not None
    if cur.available < 1:
        return Mutation(None)
    return Mutation(dataclasses.replace(cur, spent=cur.spent + 1))


def bench(name: str, store: Store, n: int) -> dict[str, float]:
    store.update(CID, _initial)
    for i in range(200):  # warm up: statement caches, psycopg auto-prepare
        store.update(CID, accept_op(i))
    t0 = time.perf_counter()
    for i in range(n):
        store.update(CID, accept_op(i))
    accept_rate = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(n):
        store.update(CID, charge)
    charge_rate = n / (time.perf_counter() - t0)
    store.close()
    print(f"{name:<26} accept+audit {accept_rate:>9,.0f} ops/s   charge {charge_rate:>9,.0f} ops/s")
    return {"accept_audit": accept_rate, "charge": charge_rate}


@contextlib.contextmanager
def pg_target(args: argparse.Namespace) -> Iterator[str | None]:
    dsn = args.pg or os.environ.get("MPP_TEST_PG_DSN")
    if dsn or not args.pg_temp:
        yield dsn
        return
    from tests.fixtures.postgres import find_bin_dir, temp_cluster

    bin_dir = find_bin_dir()
    if bin_dir is None:
        sys.exit("--pg-temp: PostgreSQL binaries not found")
    with temp_cluster(bin_dir, dbname="mpp_bench") as temp_dsn:
        yield temp_dsn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--pg", help="PostgreSQL DSN (a database the bench may write into)")
    ap.add_argument("--pg-temp", action="store_true", help="start a throwaway local cluster")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args()
    print(f"single thread, n={args.n}, python {sys.version.split()[0]}")
    rows = {"memory": bench("memory", MemoryStore(), args.n)}
    with tempfile.TemporaryDirectory() as tmp:
        for sync in ("FULL", "NORMAL"):
            path = os.path.join(tmp, f"bench-{sync}.db")
            name = f"sqlite synchronous={sync}"
            rows[name] = bench(name, SqliteStore(path, synchronous=sync), args.n)  # type: ignore[arg-type]
    with pg_target(args) as dsn:
        if dsn is None:
            print("postgres                   skipped (pass --pg DSN or --pg-temp)")
        else:
            from mpp.store.postgres import PostgresStore

            rows["postgres"] = bench("postgres", PostgresStore(dsn), args.n)
    if args.json:
        args.json.write_text(json.dumps({"n": args.n, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
