"""A small paid server for end-to-end and fault runs, in its own process.

    python -m tests.faults.paid_server '<json config>'

Serves `GET|POST /stream` (a metered SSE stream of `tokens` events, one unit each, paid through
the session intent) behind PaymentMiddleware, with a SessionServer on a SQLite file and our
escrow on `rpc_url`. The store file survives a SIGKILL, so a restarted process continues the
same channels. Config keys: rpc_url, chain_id, escrow, token, payee_key, db, port, secret,
price, suggested_deposit, tokens, token_delay, voucher_timeout, reserve_units, refresh_ttl,
settlement ({threshold, interval, idle_close}; null values turn one off), watch (run a
ChainWatcher, as `mpp serve` does). A query `?n=<count>` overrides `tokens` for one request.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

from mpp.core import ChallengeIssuer
from mpp.http import PaymentGate, PaymentMiddleware, Price, Route, get_meter
from mpp.session.engine import SessionServer
from mpp.session.settlement import SettlementPolicy
from mpp.session.terms import SessionTerms
from mpp.store.sqlite import SqliteStore


def build_app(config: dict[str, Any]) -> tuple[Any, SessionServer]:
    from mpp.chain.web3chain import Web3Chain

    token = config["token"]
    price = int(config.get("price", 10))
    deposit = int(config.get("suggested_deposit", 1_000))
    terms = SessionTerms(
        amount=price,
        currency=token,
        recipient=_address_of(config["payee_key"]),
        escrow_contract=config["escrow"].lower(),
        chain_id=int(config["chain_id"]),
        unit_type="token",
        suggested_deposit=deposit,
    )
    chain = Web3Chain(
        config["rpc_url"],
        account=config["payee_key"],
        fee_token=token,
        chain_id=int(config["chain_id"]),
        timeout=float(config.get("tx_timeout", 5.0)),
        request_timeout=float(config.get("request_timeout", 3.0)),
    )
    engine = SessionServer(
        SqliteStore(config["db"]),
        chain,
        terms,
        refresh_ttl=int(config.get("refresh_ttl", 15)),
        settlement=SettlementPolicy(**config.get("settlement", {})),
    )
    issuer = ChallengeIssuer(
        config["secret"], realm=config.get("realm", "faults.local"), clock=_utcnow
    )
    route = Route("/stream", Price(amount=price, unit_type="token", suggested_deposit=deposit))
    gate = PaymentGate(engine, issuer, [route], failure_rate=config.get("failure_rate"))
    default_tokens = int(config.get("tokens", 5))
    delay = float(config.get("token_delay", 0.0))

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        query = dict(
            p.split("=", 1) for p in scope.get("query_string", b"").decode().split("&") if "=" in p
        )
        count = int(query.get("n", default_tokens))
        meter = get_meter(scope)
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i in range(count):
            if not await meter.charge(1):
                break
            chunk = f"data: tok-{i}\n\n".encode()
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if delay:
                await asyncio.sleep(delay)
        await send({"type": "http.response.body", "body": b""})

    middleware = PaymentMiddleware(
        app,
        gate,
        voucher_timeout=float(config.get("voucher_timeout", 10.0)),
        reserve_units=int(config.get("reserve_units", 1)),
    )
    return middleware, engine


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _address_of(key: str) -> str:
    from eth_account import Account

    return str(Account.from_key(key).address).lower()


def main(argv: list[str]) -> None:
    import uvicorn

    config = json.loads(argv[0])
    app, engine = build_app(config)
    watcher = None
    if config.get("watch"):
        from mpp.session.watcher import ChainWatcher

        watcher = ChainWatcher(
            engine,
            poll_interval=float(config.get("poll_interval", 0.2)),
            settle_interval=float(config.get("settle_interval", 0.5)),
            on_event=lambda event: app.waiters.wake(event.channel_id),
        ).start()
    try:
        uvicorn.run(
            app,
            host="127.0.0.1",
            port=int(config["port"]),
            log_level=config.get("log_level", "warning"),
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
    finally:
        if watcher is not None:
            watcher.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
