"""Scaling: 1, 4, 16, 64 concurrent paid streams on one server process, then two server processes
on one PostgreSQL; every figure is paid vs unpaid, measured back to back in the same run.

    .venv/bin/python scripts/bench_scaling.py [--streams 1,4,16,64] [--quick | --smoke] [--json F]

Server under test: the metered SSE route of `mpp.http` (PaymentMiddleware + PaymentGate + the
session engine + a store) under uvicorn, each server a child process of this script. One event is
one metered unit (`meter.charge(1)`), shaped like an OpenAI chunk. Not the inference server: its
embedded model makes ~330 tokens/s per process here, which would hide the toolkit's own cost
(scripts/bench_inference.py measures that path). Clients: ONE asyncio process (httpx.AsyncClient),
apart from the servers (GIL). Paid stream k pays on its own channel, opened before any timing, with
a PaymentAuth that prepays every 100 units; unpaid = the same route let through by an API key. The
voucher rate limit is off (as in bench_http). Anvil (Tempo mode, T4) serves the chain.

Definitions, at each concurrency N:
- tokens/s: N streams of U events start together, the server sends as fast as it can;
  N*U / (last stream end - first request sent). Best of --rounds for each side.
- first-token latency (TTFT): N workers each send K one-event requests in a loop; time from
  sending a request to its first event (for paid ones: the 402, the signed credential, the retry).
- per-token latency: N streams of T events paced at R events/s each (a model's pace); the server
  stamps each event with its due time before charging it; latency = arrival at the client - due
  time (CLOCK_MONOTONIC, one clock for all processes of the host), events 1..T-1.
- added latency at p50/p99 = quantile(paid) - quantile(unpaid) (nearest rank; a difference of
  quantiles, since paid and unpaid tokens cannot be paired).
The PostgreSQL part (throwaway cluster): the same measures at --pg-streams streams against one
server process, then two server processes on the same database with the streams split between
them (stream k always on server k mod 2, the one that saw its channel open).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mpp.chain.devnet import Devnet  # noqa: E402
from mpp.http.server.asgi import Receive, Scope, Send  # noqa: E402

TOKEN = "0x20c0000000000000000000000000000000000000"
API_KEY = "sk-bench-scaling"
PREPAY = 100
DEPOSIT = 10**7
EVENT = b'data: {"i":%d,"t":%.6f,"choices":[{"index":0,"delta":{"content":"tok "}}]}\n\n'

# total: events per flat run (all streams); paced/rate: paced events per stream and their rate;
# ttft: first-token samples per side; timeout: budget of the whole run (seconds)
PRESETS: dict[str, dict[str, Any]] = {
    "full": dict(streams="1,4,16,64", total=30000, rounds=3, paced=200, rate=100.0, ttft=48,
                 pg_streams=16, timeout=420.0),
    "quick": dict(streams="1,4,16", total=5000, rounds=2, paced=60, rate=100.0, ttft=16,
                  pg_streams=4, timeout=90.0),
    "smoke": dict(streams="1,2", total=200, rounds=1, paced=20, rate=200.0, ttft=4,
                  pg_streams=0, timeout=60.0),
}  # fmt: skip


# --- server child ---------------------------------------------------------------------------------


async def stream_app(scope: Scope, receive: Receive, send: Send) -> None:
    """GET /stream?n=N&rate=R: N metered events, paced at R/s (0: as fast as possible)."""
    from mpp.http import get_meter

    query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
    n, rate = int(query.get("n", "1")), float(query.get("rate", "0"))
    meter = get_meter(scope)
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    t0 = time.monotonic()
    for i in range(n):
        if rate:
            due = t0 + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        else:
            due = time.monotonic()
        if not await meter.charge(1):
            break
        await send({"type": "http.response.body", "body": EVENT % (i, due), "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def serve() -> int:
    """Child mode: one server process, configured by one JSON line on stdin (keys never on argv)."""
    import uvicorn
    from eth_account import Account

    from mpp.chain.web3chain import Web3Chain
    from mpp.core.binding import ChallengeIssuer
    from mpp.http import PaymentGate, PaymentMiddleware, Price, RequestInfo, Route
    from mpp.session.engine import SessionServer
    from mpp.session.terms import SessionTerms
    from mpp.store.open import open_store

    cfg = json.loads(sys.stdin.readline())
    store = open_store(cfg["store"])
    chain = Web3Chain(
        cfg["rpc"], account=cfg["payee_key"], fee_token=TOKEN, chain_id=cfg["chain_id"]
    )
    terms = SessionTerms(
        amount=1,
        currency=TOKEN,
        recipient=str(Account.from_key(cfg["payee_key"]).address).lower(),
        escrow_contract=cfg["escrow"],
        chain_id=cfg["chain_id"],
    )
    issuer = ChallengeIssuer(
        cfg["secret"].encode(), realm="bench-scaling", clock=lambda: datetime.now(UTC)
    )
    price = Price(amount=1, unit_type="llm_token", suggested_deposit=DEPOSIT)

    def api_key(info: RequestInfo) -> bool:
        return info.header("authorization") == f"Bearer {API_KEY}"

    gate = PaymentGate(
        SessionServer(store, chain, terms),
        issuer,
        [Route("/stream", price)],
        authorize=api_key,
        failure_rate=None,
    )
    paid_app = PaymentMiddleware(stream_app, gate, reserve_units=PREPAY)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/ready":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await paid_app(scope, receive, send)

    # Keep-alive longer than any idle gap of a client between runs: uvicorn's 5 s default
    # closes pooled connections that httpx may be reusing at that very moment.
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=cfg["port"],
        log_level="warning",
        lifespan="off",
        timeout_keep_alive=600,
    )
    try:
        uvicorn.Server(config).run()
    finally:
        store.close()
    return 0


# --- client child ---------------------------------------------------------------------------------


async def read_stream(
    client: httpx.AsyncClient, n: int, rate: float
) -> tuple[float, float, float, list[float]]:
    """(sent, first event, end, per-token latencies of events 1.. when paced)."""
    sent = time.monotonic()
    first = 0.0
    got = 0
    latencies: list[float] = []
    buf = b""
    async with client.stream("GET", f"/stream?n={n}&rate={rate}") as r:
        if r.status_code != 200:
            raise RuntimeError(f"stream answered {r.status_code}: {(await r.aread())[:300]!r}")
        async for chunk in r.aiter_bytes():
            now = time.monotonic()
            *events, buf = (buf + chunk).split(b"\n\n")
            for event in events:
                if not event.startswith(b"data: "):
                    continue
                got += 1
                if got == 1:
                    first = now
                elif rate:
                    latencies.append(now - json.loads(event[6:])["t"])
    if got != n:
        raise RuntimeError(f"stream ended after {got} of {n} events")
    return sent, first, time.monotonic(), latencies


async def tokens_per_s(clients: list[httpx.AsyncClient], units: int) -> float:
    t0 = time.monotonic()
    await asyncio.gather(*(read_stream(c, units, 0) for c in clients))
    return len(clients) * units / (time.monotonic() - t0)


async def first_tokens(clients: list[httpx.AsyncClient], per_worker: int) -> list[float]:
    async def worker(client: httpx.AsyncClient) -> list[float]:
        out = []
        for _ in range(per_worker):
            sent, first, _, _ = await read_stream(client, 1, 0)
            out.append(first - sent)
        return out

    return [t for ts in await asyncio.gather(*(worker(c) for c in clients)) for t in ts]


async def paced(clients: list[httpx.AsyncClient], tokens: int, rate: float) -> list[float]:
    runs = await asyncio.gather(*(read_stream(c, tokens, rate) for c in clients))
    return [lat for run in runs for lat in run[3]]


def pct(values: list[float], q: float) -> float:
    """Nearest-rank quantile (q in 0..1)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summary(unpaid: list[float], paid: list[float]) -> dict[str, float]:
    out = {"samples": float(min(len(unpaid), len(paid)))}
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        u, p = pct(unpaid, q) * 1e3, pct(paid, q) * 1e3
        out |= {f"{name}_unpaid_ms": u, f"{name}_paid_ms": p, f"{name}_added_ms": p - u}
    return out


async def measure(
    paid: list[httpx.AsyncClient], free: list[httpx.AsyncClient], n: int, p: dict[str, Any]
) -> dict[str, Any]:
    units = max(50, p["total"] // n)
    best = {"unpaid": 0.0, "paid": 0.0}
    for _ in range(p["rounds"]):  # interleaved, so noise hits both sides alike
        best["unpaid"] = max(best["unpaid"], await tokens_per_s(free[:n], units))
        best["paid"] = max(best["paid"], await tokens_per_s(paid[:n], units))
    per_worker = max(2, math.ceil(p["ttft"] / n))
    ttft_free = await first_tokens(free[:n], per_worker)
    ttft_paid = await first_tokens(paid[:n], per_worker)
    lat_free = await paced(free[:n], p["paced"], p["rate"])
    lat_paid = await paced(paid[:n], p["paced"], p["rate"])
    return {
        "streams": n,
        "units_per_stream": units,
        "tokens_s_unpaid": best["unpaid"],
        "tokens_s_paid": best["paid"],
        "ratio": best["paid"] / best["unpaid"],
        "ttft": summary(ttft_free, ttft_paid),
        "token": summary(lat_free, lat_paid),
    }


async def client_main(cfg: dict[str, Any]) -> dict[str, Any]:
    from mpp.chain.web3chain import Web3Chain
    from mpp.http import PaymentAuth
    from mpp.session.payer import Payer
    from mpp.session.policy import SpendingPolicy

    p, urls = cfg["params"], cfg["urls"]
    top = max(cfg["streams"])
    paid: list[httpx.AsyncClient] = []
    free: list[httpx.AsyncClient] = []
    auths: list[PaymentAuth] = []
    policy = SpendingPolicy(max_amount_per_unit=10, max_deposit=DEPOSIT)
    for k in range(top):
        url = urls[k % len(urls)]
        payer = Payer(
            cfg["payer_keys"][k],
            records_path=Path(cfg["tmp"]) / f"payer-{k}.db",
            chain=Web3Chain(cfg["rpc"], chain_id=cfg["chain_id"]),
            policy=policy,
        )
        auths.append(PaymentAuth(payer, allow_insecure=True, deposit=DEPOSIT, prepay_units=PREPAY))
        paid.append(httpx.AsyncClient(base_url=url, auth=auths[-1], timeout=120))
        headers = {"Authorization": f"Bearer {API_KEY}"}
        free.append(httpx.AsyncClient(base_url=url, headers=headers, timeout=120))
    try:
        # Untimed: open every channel (one 402 + open per payer), warm every connection.
        gate = asyncio.Semaphore(8)

        async def warm(client: httpx.AsyncClient) -> None:
            async with gate:
                await read_stream(client, 2, 0)

        began = time.monotonic()
        await asyncio.gather(*(warm(c) for c in paid + free))
        opened = time.monotonic() - began
        rows = [await measure(paid, free, n, p) for n in cfg["streams"]]
        return {"channels": top, "open_seconds": opened, "rows": rows}
    finally:
        for client in paid + free:
            await client.aclose()
        for auth in auths:
            await auth.aclose()


# --- orchestration --------------------------------------------------------------------------------


def _tail(path: Path, chars: int = 2000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


@contextlib.contextmanager
def child(mode: str, cfg: dict[str, Any], log: Path) -> Iterator[subprocess.Popen[str]]:
    """This script in `mode`, configured on stdin; stopped by its handle on the way out."""
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, __file__, mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE if mode == "--client" else subprocess.DEVNULL,
            stderr=err,
            text=True,
        )
    try:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(cfg) + "\n")
        proc.stdin.flush()
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def wait_ready(proc: subprocess.Popen[str], url: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{_tail(log)}")
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 204:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"server not ready in {timeout:.0f} s:\n{_tail(log)}")
        time.sleep(0.05)


def run_topology(
    base: dict[str, Any], store: str, servers: int, streams: list[int], deadline: float
) -> dict[str, Any]:
    """`servers` processes on `store`; one client process runs the measures for `streams`."""
    from tests.http.support import free_port

    tmp = Path(tempfile.mkdtemp(prefix="mpp-scaling-", dir=base["tmp"]))
    with contextlib.ExitStack() as stack:
        urls = []
        for i in range(servers):
            port = free_port()
            log = tmp / f"server-{i}.log"
            cfg = {**base["server"], "store": store, "port": port}
            proc = stack.enter_context(child("--serve", cfg, log))
            urls.append(f"http://127.0.0.1:{port}")
            wait_ready(proc, urls[-1], log)  # one at a time: the first creates the schema
        log = tmp / "client.log"
        cfg = {**base["client"], "urls": urls, "streams": streams, "tmp": str(tmp)}
        client = stack.enter_context(child("--client", cfg, log))
        try:
            out, _ = client.communicate(timeout=max(5.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"client over the time budget:\n{_tail(log)}") from None
        if client.returncode != 0:
            servers_log = "".join(_tail(tmp / f"server-{i}.log") for i in range(servers))
            raise RuntimeError(
                f"client failed ({client.returncode}):\n{_tail(log)}\nservers:\n{servers_log}"
            )
        return dict(json.loads(out.strip().splitlines()[-1]))


@contextlib.contextmanager
def pg_cluster() -> Iterator[str | None]:
    dsn = os.environ.get("MPP_BENCH_PG_DSN")
    if dsn:
        yield dsn
        return
    from tests.fixtures.postgres import find_bin_dir, temp_cluster

    bin_dir = find_bin_dir()
    if bin_dir is None:
        yield None
        return
    with temp_cluster(bin_dir, "mpp_bench_scaling") as dsn:
        yield dsn


def ms(row: dict[str, Any], kind: str, q: str) -> str:
    return f"{row[kind][f'{q}_added_ms']:+.2f}"


def throughput_row(label: object, r: dict[str, Any]) -> str:
    return (
        f"| {label} | {r['tokens_s_unpaid']:,.0f} | {r['tokens_s_paid']:,.0f} | "
        f"{r['ratio']:.2f} | {ms(r, 'ttft', 'p50')} / {ms(r, 'ttft', 'p99')} | "
        f"{ms(r, 'token', 'p50')} / {ms(r, 'token', 'p99')} |"
    )


def render(result: dict[str, Any]) -> str:
    p = result["params"]
    lines = [
        f"metered SSE route of mpp.http under uvicorn; one client process (asyncio, httpx); "
        f"one channel per paid stream, prepay {PREPAY} units; flat streams {p['total']} events "
        f"in all per run (min 50 per stream), best of {p['rounds']}; paced streams {p['paced']} "
        f"events at {p['rate']:g}/s each; added = paid - unpaid at the same quantile",
        "",
        "**One server process, SQLite store**",
        "",
        "| streams | unpaid tokens/s | paid tokens/s | paid/unpaid | first token added "
        "p50 / p99 ms | per token added p50 / p99 ms |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    table = result["sqlite"]["rows"]
    lines += [throughput_row(r["streams"], r) for r in table]
    lines += [
        "",
        "Latencies, unpaid → paid (ms):",
        "",
        "| streams | first token p50 | first token p99 | per token p50 | per token p99 | samples |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table:
        t, k = r["ttft"], r["token"]
        lines.append(
            f"| {r['streams']} | {t['p50_unpaid_ms']:.2f} → {t['p50_paid_ms']:.2f} | "
            f"{t['p99_unpaid_ms']:.2f} → {t['p99_paid_ms']:.2f} | "
            f"{k['p50_unpaid_ms']:.2f} → {k['p50_paid_ms']:.2f} | "
            f"{k['p99_unpaid_ms']:.2f} → {k['p99_paid_ms']:.2f} | "
            f"{t['samples']:.0f} / {k['samples']:.0f} |"
        )
    if "pg1" in result:
        n = p["pg_streams"]
        rows = [("SQLite, 1 process", r) for r in result["sqlite"]["rows"] if r["streams"] == n]
        rows += [("PostgreSQL, 1 process", result["pg1"]["rows"][0])]
        rows += [("PostgreSQL, 2 processes", result["pg2"]["rows"][0])]
        lines += [
            "",
            f"**PostgreSQL: {n} concurrent streams, one server process vs two on the same "
            "database** (streams split k mod 2)",
            "",
            "| servers | unpaid tokens/s | paid tokens/s | paid/unpaid | first token added "
            "p50 / p99 ms | per token added p50 / p99 ms |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        lines += [throughput_row(name, r) for name, r in rows]
        two = result["pg2"]["rows"][0]["tokens_s_paid"] / result["pg1"]["rows"][0]["tokens_s_paid"]
        lines += ["", f"paid tokens/s, 2 processes / 1 process on PostgreSQL: {two:.2f}"]
    elif p["pg_streams"]:
        lines += ["", "PostgreSQL part skipped: no PostgreSQL binaries (or MPP_BENCH_PG_DSN)"]
    return "\n".join(lines)


def params(args: argparse.Namespace) -> dict[str, Any]:
    preset = dict(PRESETS["smoke" if args.smoke else "quick" if args.quick else "full"])
    for key in ("streams", "pg_streams", "timeout"):
        if getattr(args, key) is not None:
            preset[key] = getattr(args, key)
    preset["streams"] = sorted({int(s) for s in str(preset["streams"]).split(",") if s.strip()})
    if not preset["streams"] or min(preset["streams"]) < 1:
        raise SystemExit("--streams: positive integers, comma-separated")
    return preset


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="short run (about a minute)")
    mode.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    ap.add_argument("--streams", help="concurrency levels, e.g. 1,4,16,64")
    ap.add_argument("--pg-streams", type=int, help="streams for the PostgreSQL part (0: skip)")
    ap.add_argument("--timeout", type=float, help="time budget of the whole run, seconds")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        return serve()
    if args.client:
        print(json.dumps(asyncio.run(client_main(json.loads(sys.stdin.readline())))))
        return 0
    p = params(args)
    deadline = time.monotonic() + p["timeout"]
    top = max([*p["streams"], p["pg_streams"]])
    result: dict[str, Any] = {"params": p}
    with Devnet.start() as devnet, tempfile.TemporaryDirectory() as tmp:
        payee, *payers = devnet.new_accounts(1 + top)
        base = {
            "tmp": tmp,
            "server": {
                "rpc": devnet.rpc_url,
                "chain_id": devnet.chain_id,
                "escrow": devnet.escrow,
                "payee_key": "0x" + payee.key.hex(),
                "secret": os.urandom(24).hex(),
            },
            "client": {
                "rpc": devnet.rpc_url,
                "chain_id": devnet.chain_id,
                "payer_keys": ["0x" + a.key.hex() for a in payers],
                "params": p,
            },
        }
        db = f"sqlite:{Path(tmp) / 'server.db'}"
        result["sqlite"] = run_topology(base, db, 1, p["streams"], deadline)
        if p["pg_streams"]:
            with pg_cluster() as dsn:
                if dsn is not None:
                    n = [p["pg_streams"]]
                    result["pg1"] = run_topology(base, dsn, 1, n, deadline)
                    result["pg2"] = run_topology(base, dsn, 2, n, deadline)
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
