"""Subprocess worker for the multi-process store tests (run with `python -m`).

    race  DSN CID WORKER OPS THREADS  — OPS updates on one channel from THREADS threads; half raise
                                        acceptedCumulative, half charge `spent` only if available.
    crash DSN CID                      — one accepted voucher, then wait to be SIGKILLed.

The worker prints "ready", waits for a line on stdin (so all workers start together), runs, and
prints one JSON line with its counts.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading

from mpp.session.ports import ChannelState, Mutation
from mpp.store.open import open_store
from tests.store._support import accept, invariant_ok

ACCEPT_STEP = 7
COST = 5


class InvariantBroken(Exception):
    pass


def race(dsn: str, cid: str, worker: int, ops: int, threads: int) -> dict[str, int]:
    store = open_store(dsn)
    counts = {"accepted": 0, "charged": 0, "refused": 0, "violations": 0, "errors": 0}
    lock = threading.Lock()

    def one(kind: str, tag: str) -> None:
        charged = False

        def decide(cur: ChannelState | None) -> Mutation:
            nonlocal charged
            charged = False  # decide may run again on a retry; only the last run counts
            if cur is None or not invariant_ok(cur):
                raise InvariantBroken(repr(cur))
            if kind == "accept":
                return accept(cur, ACCEPT_STEP, tag)
            if cur.available >= COST:
                charged = True
                return Mutation(dataclasses.replace(cur, spent=cur.spent + COST))
            return Mutation(None)

        try:
            after = store.update(cid, decide)
        except InvariantBroken:
            key = "violations"
        except Exception:
            key = "errors"
        else:
            ok = after is not None and invariant_ok(after)
            key = (
                ("accepted" if kind == "accept" else "charged" if charged else "refused")
                if ok
                else "violations"
            )
        with lock:
            counts[key] += 1

    def run(t: int) -> None:
        for i in range(t, ops, threads):
            one("accept" if i % 2 == 0 else "charge", f"w{worker}-op{i}")

    pool = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    store.close()
    return counts


def main(argv: list[str]) -> int:
    mode, dsn, cid = argv[0], argv[1], argv[2]
    print("ready", flush=True)
    sys.stdin.readline()
    if mode == "race":
        out = race(dsn, cid, int(argv[3]), int(argv[4]), int(argv[5]))
    elif mode == "crash":
        store = open_store(dsn)
        after = store.update(
            cid, lambda cur: accept(cur, 11, "before-crash") if cur else Mutation(None)
        )
        out = {"accepted_cumulative": after.accepted_cumulative if after else -1}
        print(json.dumps(out), flush=True)
        threading.Event().wait()  # hold the store open until killed: no clean close()
        return 1
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
