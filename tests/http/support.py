"""Test harness: a real uvicorn on a free loopback port (in a thread, stopped by its handle),
and the same paid routes as a plain ASGI app, a Starlette app and a FastAPI app."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from eth_account import Account
from fastapi import Depends, FastAPI
from fastapi.responses import StreamingResponse

from mpp.core.binding import ChallengeIssuer
from mpp.http import Meter, PaymentGate, PaymentMiddleware, Price, Route, get_meter
from mpp.http.server.fastapi import payment_meter
from mpp.http.server.routes import RequestInfo
from mpp.session.engine import SessionServer
from mpp.session.payer import Payer
from mpp.session.policy import SpendingPolicy
from mpp.session.terms import SessionTerms
from mpp.store.sqlite import SqliteStore

TOKEN = "0x20c0000000000000000000000000000000000000"
SECRET = b"http-test-secret-0123456789abcdef-0123456789"
API_KEY = "sk-test-api-key"
FIXED = Price(amount=1_000, description="one answer")
PER_TOKEN = Price(amount=10, unit_type="llm_token", suggested_deposit=2_000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """uvicorn.Server running `app` in a thread; `stop()` asks it to exit and joins."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@dataclass
class Counters:
    calls: dict[str, int] = field(default_factory=dict)

    def hit(self, name: str) -> int:
        self.calls[name] = self.calls.get(name, 0) + 1
        return self.calls[name]


def api_key_ok(info: RequestInfo) -> bool:
    return info.header("authorization") == f"Bearer {API_KEY}"


@dataclass
class Env:
    devnet: Any
    payer_key: str
    payee_key: str
    tmp: Path

    @property
    def payer(self) -> str:
        return str(Account.from_key(self.payer_key).address).lower()

    @property
    def payee(self) -> str:
        return str(Account.from_key(self.payee_key).address).lower()

    def terms(self, **kw: Any) -> SessionTerms:
        base: dict[str, Any] = dict(
            amount=1,
            currency=TOKEN,
            recipient=self.payee,
            escrow_contract=self.devnet.escrow,
            chain_id=self.devnet.chain_id,
            suggested_deposit=50_000,
        )
        base.update(kw)
        return SessionTerms(**base)

    def engine(self, **kw: Any) -> SessionServer:
        store = SqliteStore(str(self.tmp / "server.db"))
        chain = self.devnet.chain(self.payee_key, fee_token=TOKEN)
        return SessionServer(store, chain, self.terms(), **kw)

    def issuer(self) -> ChallengeIssuer:
        return ChallengeIssuer(SECRET, realm="test.local", clock=lambda: datetime.now(UTC))

    def gate(self, counters: Counters | None = None, **kw: Any) -> PaymentGate:
        routes = [
            Route("/fixed", FIXED),
            Route("/cheap", Price(amount=100)),
            Route("/stream", PER_TOKEN),
            Route("/v1/chat/completions", PER_TOKEN),
        ]
        kw.setdefault("authorize", api_key_ok)
        return PaymentGate(self.engine(), self.issuer(), routes, **kw)

    def payer_for(self, key: str | None = None, name: str = "payer.db", **kw: Any) -> Payer:
        policy = kw.pop("policy", SpendingPolicy(max_amount_per_unit=10_000, max_deposit=10**7))
        return Payer(
            key or self.payer_key,
            records_path=self.tmp / name,
            chain=self.devnet.chain(),
            policy=policy,
            **kw,
        )


# --- the routes, three ways ------------------------------------------------------------------


def plain_app(gate: PaymentGate, counters: Counters, **mw: Any) -> Any:
    """A bare ASGI callable (no framework) behind the middleware."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        counters.hit(path)
        if path == "/stream":
            await _plain_stream(scope, send, get_meter(scope))
            return
        body = json.dumps({"path": path, "n": counters.calls[path]}).encode()
        headers = [(b"content-type", b"application/json"), (b"cache-control", b"max-age=60")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return PaymentMiddleware(app, gate, **mw)


async def _plain_stream(scope: dict[str, Any], send: Any, meter: Meter) -> None:
    query = dict(_query(scope))
    n = int(query.get("n", "20"))
    gap = 1 / float(query["rate"]) if "rate" in query else 0.0  # units per second (a model)
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for i in range(n):
        if gap:
            await asyncio.sleep(gap)
        if not await meter.charge(1):
            break
        chunk = f"data: {json.dumps({'i': i})}\n\n".encode()
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def _query(scope: dict[str, Any]) -> list[tuple[str, str]]:
    raw = scope.get("query_string", b"").decode()
    return [tuple(p.split("=", 1)) for p in raw.split("&") if "=" in p]  # type: ignore[misc]


async def token_stream(meter: Meter, n: int, fmt: str = "plain") -> AsyncIterator[str]:
    for i in range(n):
        if not await meter.charge(1):
            return
        if fmt == "openai":
            chunk = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "test",
                "choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}],
            }
            yield f"data: {json.dumps(chunk)}\n\n"
        else:
            yield f"data: {json.dumps({'i': i})}\n\n"
    if fmt == "openai":
        yield "data: [DONE]\n\n"


def starlette_app(gate: PaymentGate, counters: Counters, **mw: Any) -> Any:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route as SRoute

    async def fixed(request: Request) -> JSONResponse:
        n = counters.hit(request.url.path)
        if request.query_params.get("fail"):
            return JSONResponse({"error": "boom"}, status_code=500)
        return JSONResponse({"path": request.url.path, "n": n})

    async def stream(request: Request) -> StreamingResponse:
        counters.hit(request.url.path)
        n = int(request.query_params.get("n", "20"))
        return StreamingResponse(
            token_stream(get_meter(request), n), media_type="text/event-stream"
        )

    async def chat(request: Request) -> StreamingResponse:
        counters.hit(request.url.path)
        body = await request.json()
        n = int(body.get("max_tokens", 20))
        gen = token_stream(get_meter(request), n, "openai")
        return StreamingResponse(gen, media_type="text/event-stream")

    routes = [
        SRoute("/fixed", fixed, methods=["GET", "POST"]),
        SRoute("/cheap", fixed, methods=["GET", "POST"]),
        SRoute("/free", fixed, methods=["GET"]),
        SRoute("/stream", stream, methods=["GET", "POST"]),
        SRoute("/v1/chat/completions", chat, methods=["POST"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(PaymentMiddleware, gate=gate, **mw)])


def fastapi_app(gate: PaymentGate, counters: Counters, **mw: Any) -> Any:
    app = FastAPI()
    app.add_middleware(PaymentMiddleware, gate=gate, **mw)

    @app.get("/fixed")
    async def fixed() -> dict[str, Any]:
        return {"path": "/fixed", "n": counters.hit("/fixed")}

    @app.get("/stream")
    async def stream(
        meter: Annotated[Meter, Depends(payment_meter)], n: int = 20
    ) -> StreamingResponse:
        counters.hit("/stream")
        return StreamingResponse(token_stream(meter, n), media_type="text/event-stream")

    return app


def final_receipt(receipts: list[dict[str, Any]]) -> dict[str, Any]:
    """The stream's final receipt (the one with `units`); prepay-ahead voucher receipts may
    arrive after it."""
    return next(r for r in reversed(receipts) if "units" in r)
