"""HTTP adapter benchmark: paid vs unpaid SSE throughput, and the added server-side latency of a
paid non-streaming request on an open channel. One run, one server, ratios (docs/development.md).

    .venv/bin/python scripts/bench_http.py [--units 20000] [--requests 300]
    .venv/bin/python scripts/bench_http.py --wan [--rtt 0.05]

Server: uvicorn (loopback, in a child process) + PaymentMiddleware over a SQLite store and
anvil in Tempo mode, both on their defaults. Unpaid = the same route and middleware, let
through by an API key. Paid = `PaymentAuth(payer)` on its defaults (the bandwidth × delay
window; `--prepay N` fixes the lead instead). The failure rate limit is off here.

`--wan`: the client reaches the server through a loopback proxy adding `--rtt` seconds of
round-trip time (tests.delay_proxy), and the stream is a model at 100 tokens/s and unpaced:
tokens/s paid vs unpaid (alternating rounds, one open channel), and the time to the first
token on the open channel, paid vs unpaid (median of `--ttft` requests).

`MPP_BENCH_PROFILE=/tmp/server.prof` writes a cProfile of the server process there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpp.chain.devnet import Devnet
from mpp.http import PaymentAuth, PaymentGate, PaymentMiddleware, Price, Route, get_meter
from tests.http.support import API_KEY, Env, api_key_ok, free_port

UNIT = Price(amount=1, unit_type="token", suggested_deposit=10**6)
FLAT = Price(amount=100)


def app(gate: PaymentGate, timings: list[tuple[int, float]]) -> Any:
    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/stream":
            query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&"))
            n, gap = int(query["n"]), 1 / float(query.get("rate", "inf"))
            meter = get_meter(scope)
            headers = [(b"content-type", b"text/event-stream")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for i in range(n):
                if gap:
                    await asyncio.sleep(gap)  # a model producing `rate` tokens per second
                if not await meter.charge(1):
                    break
                body = b'data: {"choices":[{"delta":{"content":"tok%d"}}]}\n\n' % i
                await send({"type": "http.response.body", "body": body, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'{"ok":true}'})

    mw = PaymentMiddleware(inner, gate)

    async def timed(scope: dict[str, Any], receive: Any, send: Any) -> None:
        t0 = time.perf_counter()
        status = 0

        async def spy(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        if scope["type"] == "http" and scope["path"] == "/_timings":
            body = json.dumps(timings).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
            timings.clear()
            return
        await mw(scope, receive, spy)
        if scope["type"] == "http" and scope["path"] == "/flat":
            paid = any(
                k == b"authorization" and v.startswith(b"Payment ") for k, v in scope["headers"]
            )
            timings.append((status if paid else -status, time.perf_counter() - t0))

    return timed


def stream_rate(
    client: httpx.Client, url: str, units: int, headers: dict[str, str], query: str = ""
) -> float:
    return stream_timed(client, url, units, headers, query)[0]


def stream_timed(
    client: httpx.Client, url: str, units: int, headers: dict[str, str], query: str = ""
) -> tuple[float, float]:
    """(units per second, seconds to the first unit) of one stream."""
    t0 = time.perf_counter()
    got = 0
    first = 0.0
    with client.stream("GET", f"{url}/stream?n={units}{query}", headers=headers) as r:
        assert r.status_code == 200, r.status_code
        tail = b""
        for chunk in r.iter_bytes():
            if not first and b"data: " in chunk:
                first = time.perf_counter() - t0
            joined = tail + chunk
            got += joined.count(b"data: ")
            tail = joined[-5:] if not joined.endswith(b"\n") else b""
            got -= tail.count(b"data: ")
    elapsed = time.perf_counter() - t0
    assert got == units, (got, units)
    return units / elapsed, first


def serve() -> int:
    """Child mode: build the server from one JSON line on stdin (keys never on argv)."""
    import uvicorn

    cfg = json.loads(sys.stdin.readline())
    devnet = Devnet(None, cfg["rpc"], 0, cfg["chain_id"], None, escrow=cfg["escrow"])  # type: ignore[arg-type]
    env = Env(devnet, cfg["payer_key"], cfg["payee_key"], Path(cfg["tmp"]))
    routes = [Route("/stream", UNIT), Route("/flat", FLAT)]
    gate = PaymentGate(env.engine(), env.issuer(), routes, authorize=api_key_ok, failure_rate=None)
    timings: list[tuple[int, float]] = []
    config = uvicorn.Config(
        app(gate, timings),
        host="127.0.0.1",
        port=cfg["port"],
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--units", type=int, default=20_000)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prepay", type=int, default=None, help="a fixed lead (default: adaptive)")
    ap.add_argument("--wan", action="store_true", help="through a delay proxy (see above)")
    ap.add_argument("--rtt", type=float, default=0.05, help="--wan round-trip time, seconds")
    ap.add_argument("--ttft", type=int, default=30, help="--wan first-token requests")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args()
    if args.serve:
        profile = os.environ.get("MPP_BENCH_PROFILE")  # where to write the server's cProfile
        if not profile:
            return serve()
        import cProfile
        import signal

        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # write the profile on terminate
        with cProfile.Profile() as prof:
            try:
                return serve()
            finally:
                prof.dump_stats(profile)
    with Devnet.start() as devnet, tempfile.TemporaryDirectory() as tmp:
        payer_acct, payee_acct = devnet.new_accounts(2, amount=10**9)
        env = Env(devnet, "0x" + payer_acct.key.hex(), "0x" + payee_acct.key.hex(), Path(tmp))
        port = free_port()
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, text=True
        )
        assert child.stdin is not None
        cfg = {
            "rpc": devnet.rpc_url,
            "chain_id": devnet.chain_id,
            "escrow": devnet.escrow,
            "payer_key": env.payer_key,
            "payee_key": env.payee_key,
            "tmp": tmp,
            "port": port,
        }
        child.stdin.write(json.dumps(cfg) + "\n")
        child.stdin.flush()
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    httpx.get(url + "/_timings")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            result = run_wan(env, url, args) if args.wan else run(env, url, args)
            if args.json:
                args.json.write_text(json.dumps(result, indent=2))
        finally:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:  # a stream still open on the server: do not wait
                child.kill()
                child.wait(10)
    return 0


def run_wan(env: Env, url: str, args: argparse.Namespace) -> dict[str, Any]:
    from tests.delay_proxy import DelayProxy

    port = int(url.rsplit(":", 1)[1])
    payer = env.payer_for(policy=None)
    auth = PaymentAuth(payer, allow_insecure=True, deposit=10**8, prepay_units=args.prepay)
    key = {"Authorization": f"Bearer {API_KEY}"}
    out: dict[str, Any] = {"rtt_ms": args.rtt * 1e3, "rounds": args.rounds}
    with (
        DelayProxy(port, args.rtt) as proxy,
        httpx.Client(auth=auth, timeout=120) as paid_client,
        httpx.Client(timeout=120) as free_client,
    ):
        far = proxy.url
        stream_rate(paid_client, far, 200, {}, "&rate=100")  # open the channel, warm up
        stream_rate(free_client, far, 200, key, "&rate=100")
        for name, units, query in (("paced", 300, "&rate=100"), ("unpaced", 5_000, "")):
            paid, free = [], []
            for _ in range(args.rounds):
                free.append(stream_rate(free_client, far, units, key, query))
                paid.append(stream_rate(paid_client, far, units, {}, query))
            ratio = statistics.median(paid) / statistics.median(free)
            print(
                f"WAN {args.rtt * 1e3:.0f} ms RTT, {name}: tokens/s unpaid median "
                f"{statistics.median(free):,.1f}  paid {statistics.median(paid):,.1f}  "
                f"ratio of medians {ratio:.3f}  ({units} tokens, {args.rounds} rounds)"
            )
            out[f"{name}_unpaid"] = statistics.median(free)
            out[f"{name}_paid"] = statistics.median(paid)
            out[f"{name}_ratio"] = ratio
        paid_t, free_t = [], []
        for _ in range(args.ttft):  # a short answer on the open channel, alternating
            free_t.append(stream_timed(free_client, far, 5, key, "&rate=100")[1])
            paid_t.append(stream_timed(paid_client, far, 5, {}, "&rate=100")[1])
    added = (statistics.median(paid_t) - statistics.median(free_t)) * 1e3
    print(
        f"WAN TTFT on an open channel: unpaid median {statistics.median(free_t) * 1e3:.1f} ms  "
        f"paid {statistics.median(paid_t) * 1e3:.1f} ms  added {added:.1f} ms (n={args.ttft})"
    )
    out.update(
        ttft_unpaid_ms=statistics.median(free_t) * 1e3,
        ttft_paid_ms=statistics.median(paid_t) * 1e3,
        ttft_added_ms=added,
        prepay=args.prepay,
    )
    return out


def run(env: Env, url: str, args: argparse.Namespace) -> dict[str, Any]:
    payer = env.payer_for(policy=None)
    auth = PaymentAuth(payer, allow_insecure=True, deposit=10**8, prepay_units=args.prepay)
    paid_client = httpx.Client(auth=auth, timeout=60)
    free_client = httpx.Client(timeout=60)
    key = {"Authorization": f"Bearer {API_KEY}"}
    stream_rate(paid_client, url, 1000, {})  # open the channel, warm up
    stream_rate(free_client, url, 1000, key)
    paid, free = [], []
    for _ in range(args.rounds):
        free.append(stream_rate(free_client, url, args.units, key))
        paid.append(stream_rate(paid_client, url, args.units, {}))
    print(
        f"SSE units/s  unpaid best {max(free):,.0f}  paid best {max(paid):,.0f}  "
        f"ratio {max(paid) / max(free):.3f}  (median ratio "
        f"{statistics.median(paid) / statistics.median(free):.3f}, {args.units} units, "
        f"lead {args.prepay or 'adaptive'}, {args.rounds} rounds)"
    )
    for _ in range(20):
        paid_client.get(url + "/flat")
        free_client.get(url + "/flat", headers=key)
    httpx.get(url + "/_timings")  # reset
    for _ in range(args.requests):
        assert paid_client.get(url + "/flat").status_code == 200
        free_client.get(url + "/flat", headers=key)
    timings = httpx.get(url + "/_timings").json()
    paid_t = [t for s, t in timings if s == 200]
    free_t = [t for s, t in timings if s == -200]
    p50p, p50f = statistics.median(paid_t), statistics.median(free_t)
    p90p = statistics.quantiles(paid_t, n=10)[-1]
    print(
        f"/flat server-side p50 paid {p50p * 1e3:.3f} ms  unpaid {p50f * 1e3:.3f} ms  "
        f"added p50 {(p50p - p50f) * 1e3:.3f} ms  (paid p90 {p90p * 1e3:.3f} ms, "
        f"n={len(paid_t)}; one new voucher per request)"
    )
    paid_client.close()
    free_client.close()
    return {
        "units": args.units,
        "prepay": args.prepay,
        "rounds": args.rounds,
        "sse_unpaid_best": max(free),
        "sse_paid_best": max(paid),
        "sse_ratio_best": max(paid) / max(free),
        "sse_ratio_median": statistics.median(paid) / statistics.median(free),
        "flat_p50_paid_ms": p50p * 1e3,
        "flat_p50_unpaid_ms": p50f * 1e3,
        "flat_added_p50_ms": (p50p - p50f) * 1e3,
        "flat_p90_paid_ms": p90p * 1e3,
        "requests": len(paid_t),
    }


if __name__ == "__main__":
    sys.exit(main())
