"""Voucher verification and acceptance throughput, measured as ratios in one run.

    .venv/bin/python scripts/bench_vouchers.py [--n 5000]

Rows: raw libsecp256k1 recovery (coincurve), eth-account recovery of the same digest, our
`recover_voucher_signer` (digest + low-s checks + recovery), and the full voucher acceptance
through `SessionServer.handle` (parse, verify, persist in one store transaction) on SQLite
(synchronous FULL and NORMAL) and PostgreSQL. PostgreSQL uses $MPP_BENCH_PG_DSN when set, else a
throwaway cluster started like the test fixture (skipped when the binaries are missing).
Goals: our verify ≥ 0.85× raw recovery (the streams issue); acceptance on SQLite ≥ 2,000/s
on one core.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from coincurve import PublicKey
from eth_account import Account

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mpp.session.engine import SessionServer  # noqa: E402
from mpp.session.ports import ChannelState, Mutation, Store  # noqa: E402
from mpp.session.terms import SessionTerms  # noqa: E402
from mpp.session.voucher import recover_voucher_signer, sign_voucher, voucher_digest  # noqa: E402
from tests.session._workers import NoChain  # noqa: E402  (the chain that must not be called)

KEY = "0x" + "11" * 32
PAYER = str(Account.from_key(KEY).address).lower()
PAYEE = "0x" + "22" * 20
ESCROW = "0x" + "ee" * 20
TOKEN = "0x20c0000000000000000000000000000000000000"
CHAIN_ID = 31337
CID = "0x" + "ab" * 32
NOW = 1_800_000_000


def rate(n: int, fn: Callable[[int], object], repeats: int = 3) -> float:
    """Best of `repeats` passes (the machine is shared; the best pass is the least disturbed)."""
    fn(0)  # warm caches (domain separator, imports)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        best = max(best, n / (time.perf_counter() - start))
    return best


def signed(n: int) -> list[tuple[int, str, bytes]]:
    out = []
    for i in range(n):
        cum = i + 1
        sig = sign_voucher(KEY, CID, cum, chain_id=CHAIN_ID, escrow=ESCROW)
        digest = voucher_digest(CID, cum, chain_id=CHAIN_ID, escrow=ESCROW)
        out.append((cum, sig, digest))
    return out


def acceptance(store: Store, vouchers: list[tuple[int, str, bytes]]) -> float:
    state = ChannelState(
        channel_id=CID,
        escrow=ESCROW,
        chain_id=CHAIN_ID,
        payer=PAYER,
        payee=PAYEE,
        token=TOKEN,
        authorized_signer="0x" + "00" * 20,
        deposit=10**18,
        settled=0,
        accepted_cumulative=0,
        spent=0,
        voucher_signature=None,
        refreshed_at=NOW,
    )
    store.update(CID, lambda _cur: Mutation(state))
    terms = SessionTerms(
        amount=1, currency=TOKEN, recipient=PAYEE, escrow_contract=ESCROW, chain_id=CHAIN_ID
    )
    server = SessionServer(store, NoChain(), terms, now=lambda: NOW)
    payloads = [
        {"action": "voucher", "channelId": CID, "cumulativeAmount": str(cum), "signature": sig}
        for cum, sig, _ in vouchers
    ]
    start = time.perf_counter()
    for p in payloads[1:]:
        server.handle(p, challenge_id="bench")
    elapsed = time.perf_counter() - start
    final = store.get(CID)
    assert final is not None and final.accepted_cumulative == vouchers[-1][0]
    return (len(payloads) - 1) / elapsed


@contextlib.contextmanager
def postgres_dsn() -> Iterator[str | None]:
    env = os.environ.get("MPP_BENCH_PG_DSN")
    if env:
        yield env
        return
    try:
        from tests.fixtures.postgres import find_bin_dir, temp_cluster
    except ImportError:
        yield None
        return
    bin_dir = find_bin_dir()
    if bin_dir is None:
        yield None
        return
    with temp_cluster(bin_dir, "mpp_bench") as dsn:
        yield dsn


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    n = args.n
    vouchers = signed(n)
    raw = [(bytes.fromhex(s[2:130]) + bytes((int(s[-2:], 16) - 27,)), d) for _, s, d in vouchers]

    rows: list[tuple[str, float]] = []
    rows.append(
        (
            "raw recover (coincurve)",
            rate(
                n, lambda i: PublicKey.from_signature_and_message(raw[i][0], raw[i][1], hasher=None)
            ),
        )
    )
    rows.append(
        (
            "eth-account recover (same digest)",
            rate(
                n // 4,
                lambda i: Account._recover_hash(
                    vouchers[i][2], signature=bytes.fromhex(vouchers[i][1][2:])
                ),
            ),
        )
    )
    rows.append(
        (
            "our recover_voucher_signer",
            rate(
                n,
                lambda i: recover_voucher_signer(
                    CID, vouchers[i][0], vouchers[i][1], chain_id=CHAIN_ID, escrow=ESCROW
                ),
            ),
        )
    )
    from mpp.store.sqlite import SqliteStore

    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("FULL", "NORMAL"):
            store = SqliteStore(os.path.join(tmp, f"{mode}.db"), synchronous=mode)
            rows.append((f"accept voucher, SQLite synchronous={mode}", acceptance(store, vouchers)))
            store.close()
    with postgres_dsn() as dsn:
        if dsn is not None:
            from mpp.store.postgres import PostgresStore

            store_pg = PostgresStore(dsn)
            rows.append(("accept voucher, PostgreSQL", acceptance(store_pg, vouchers[: n // 2])))
            store_pg.close()

    base = rows[0][1]
    print(f"vouchers: {n}, python {sys.version.split()[0]}, one thread\n")
    print("| operation | ops/s | × raw recover |")
    print("|---|---:|---:|")
    for name, ops in rows:
        print(f"| {name} | {ops:,.0f} | {ops / base:.2f} |")
    if args.json:
        out = [{"name": name, "ops_per_s": ops, "x_raw": ops / base} for name, ops in rows]
        args.json.write_text(json.dumps({"n": n, "rows": out}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
