"""The OpenAI-compatible server: `create_app(settings)` → an ASGI app.

Request path for `POST /v1/chat/completions` (the front, `_Front`):

1. read and validate the body (400) and plan the providers (503 for a model nobody serves, or
   none left after the filters) *before* any payment, so nobody opens a channel for a request
   that cannot run;
2. `Authorization: Bearer` → the operator's API keys (401), served unpaid;
   anything else → the `mpp.http` PaymentMiddleware (402 challenge / vouchers / receipts), whose
   Meter the handler charges before every token (`mpp.inference.completion`);
3. voucher top-ups (HEAD or a bodyless POST with a Payment credential) go straight to the
   middleware.

Error bodies are OpenAI's `{"error": {...}}`; the payment layer's RFC 9457 problem bodies keep
their members and gain that `error` object, so both kinds of client understand them.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from mpp.http.server.asgi import ASGIApp, Message, PaymentMiddleware, Receive, Scope, Send
from mpp.http.server.body import ClientDisconnected, read_body, replay_body
from mpp.http.server.gate import PaymentGate
from mpp.http.server.meter import Meter, get_meter
from mpp.http.server.routes import Price, RequestInfo
from mpp.http.server.routes import Route as PaidRoute
from mpp.inference.api import (
    MAX_BODY_BYTES,
    APIError,
    ChatCompletionRequest,
    parse_request,
    streams,
)
from mpp.inference.chunks import DONE, ChunkWriter, Usage, completion_body
from mpp.inference.completion import (
    Delta,
    Done,
    Failed,
    PromptCharges,
    Stopped,
    Unpaid,
    charge_prompt,
    hold_answer,
    run,
    start,
)
from mpp.inference.observe import Observability, attach_meter
from mpp.inference.operator import OPERATOR_PATHS, operator_routes
from mpp.inference.providers.base import GenerationParams
from mpp.inference.registry import ProviderEntry
from mpp.inference.routing import filter_candidates, plan
from mpp.inference.settings import InferenceSettings

__all__ = ["CHAT_PATH", "UNIT_TYPE", "create_app"]

log = logging.getLogger(__name__)

CHAT_PATH: Final = "/v1/chat/completions"
UNIT_TYPE: Final = "llm_token"
# Base units per metered unit, so a client can turn a receipt's `units` into money.
UNIT_PRICE_HEADER: Final = "x-mpp-unit-price"
_PLANNED: Final = "mpp.inference.planned"


def error_response(err: APIError) -> Response:
    return Response(
        err.body_bytes(), status_code=err.status, headers=err.headers, media_type="application/json"
    )


def params_of(req: ChatCompletionRequest) -> GenerationParams:
    return GenerationParams(
        model=req.model,
        messages=tuple((m.role, m.text()) for m in req.messages),
        max_tokens=req.max_tokens,
        temperature=None if req.temperature is None else float(req.temperature),
        top_p=None if req.top_p is None else float(req.top_p),
        stop=req.stop_sequences,
        frequency_penalty=None if req.frequency_penalty is None else float(req.frequency_penalty),
        presence_penalty=None if req.presence_penalty is None else float(req.presence_penalty),
        seed=req.seed,
    )


class _Service:
    def __init__(self, settings: InferenceSettings, observe: Observability) -> None:
        self.settings = settings
        self.registry = settings.registry
        self.observe = observe

    def plan(self, req: ChatCompletionRequest) -> list[ProviderEntry]:
        entries = self.registry.for_model(req.model)
        if not entries:  # the seed platform's answer for a model nobody serves
            raise APIError.unavailable(f"No providers available for model '{req.model}'.")
        candidates = filter_candidates(
            entries, allow_external=req.include_external, price_ceiling=req.price_ceiling
        )
        if not candidates:
            raise APIError.unavailable(
                f"No provider for '{req.model}' matches allow_external and the price ceilings."
            )
        return plan(candidates, req.routing_strategy, self.settings.rng)

    async def chat(self, request: Request) -> Response:
        try:
            req, entries = request.scope[_PLANNED]
            stream = streams(req, request.headers.get("accept"))
            meter = get_meter(request)
            attach_meter(request.scope, meter)  # the access log reports its units and cost
            return await self._chat(req, entries, meter, stream)
        except APIError as err:
            return error_response(err)
        except Exception:  # never a traceback to the peer
            log.exception("chat completion failed")
            return error_response(APIError(500, "Internal error.", type="api_error"))

    async def _chat(
        self, req: ChatCompletionRequest, entries: list[ProviderEntry], meter: Meter, stream: bool
    ) -> Response:
        prompts = PromptCharges(meter, self.settings.effective_unit_price)
        try:
            attempt = await start(entries, params_of(req), req.timeout_ms / 1000, prompts.pay)
        except Unpaid:  # the payment layer answers 402 with what fell short
            raise APIError(402, "Payment required to continue.", type="payment_required") from None
        self.observe.providers.first_token(attempt)
        cursor = prompts.cursor_for(attempt.entry)
        if not stream and not await hold_answer(attempt, cursor, meter, req.max_tokens):
            raise APIError(402, "Payment required to continue.", type="payment_required")
        if not await charge_prompt(attempt, cursor, meter):
            # Unpaid before the response started: the payment layer answers 402.
            raise APIError(402, "Payment required to continue.", type="payment_required")
        created = int(time.time())
        writer = ChunkWriter(req.model, created)
        outcomes = self.observe.providers.timed(attempt, run(attempt, cursor, meter))
        headers = {
            "x-mpp-provider": attempt.entry.name,
            UNIT_PRICE_HEADER: str(self.settings.effective_unit_price),
        }
        if stream:
            headers["cache-control"] = "no-cache"
            return StreamingResponse(
                _sse(writer, outcomes), media_type="text/event-stream", headers=headers
            )
        parts: list[str] = []
        async for out in outcomes:
            if isinstance(out, Delta):
                parts.append(out.text)
            elif isinstance(out, Done):
                body = completion_body(
                    completion_id=writer.id,
                    model=req.model,
                    created=created,
                    text="".join(parts),
                    finish_reason=out.finish_reason,
                    usage=out.usage,
                )
                return Response(body, media_type="application/json", headers=headers)
            elif isinstance(out, Failed):
                raise APIError.all_failed(f"The provider failed mid-generation: {out.message}")
        # Stopped: unpaid before the response started; the payment layer answers 402.
        raise APIError(402, "Payment required to continue.", type="payment_required")

    async def models(self, request: Request) -> Response:
        """Prices per model and, on a paid server, how to pay: the methods a 402 offers, the
        base units per metered token and, with `charge_per_request`, a JSON answer's price."""
        body = self.registry.models_listing(int(time.time()))
        pay = self.settings.payment
        if pay is not None:
            payment: dict[str, Any] = {
                "methods": ["tempo/session"] + (["tempo/charge"] if pay.charge_per_request else []),
                "currency": pay.engine.terms.currency,
                "unitType": UNIT_TYPE,
                "amountPerUnit": str(self.settings.effective_unit_price),
            }
            if pay.charge_per_request:
                payment["chargePerRequest"] = str(pay.charge_per_request)
            for model in body["data"]:
                model["payment"] = payment
        return JSONResponse(body)


async def _sse(writer: ChunkWriter, outcomes: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    yield writer.role()
    usage = Usage(0, 0)
    async for out in outcomes:
        if isinstance(out, Delta):
            yield writer.content(out.text)
            continue
        usage = out.usage
        if isinstance(out, Done):
            yield writer.finish(out.finish_reason)
        elif isinstance(out, Failed):
            yield writer.error(f"The provider failed mid-stream: {out.message}")
        elif isinstance(out, Stopped):
            yield writer.finish("length")
    yield writer.usage(usage)  # usage is always included
    yield DONE


def _scheme(scope: Scope) -> tuple[str, str]:
    for key, value in scope.get("headers", ()):
        if key.lower() == b"authorization":
            text = bytes(value).decode("latin-1").strip()
            scheme, _, rest = text.partition(" ")
            return scheme.lower(), rest.strip()
    return "", ""


class _Front:
    """Validation, routing pre-check and auth dispatch in front of the handlers (see module doc)."""

    def __init__(self, service: _Service, app: ASGIApp, paid: PaymentMiddleware | None) -> None:
        self.service = service
        self.app = app
        self.paid = paid
        self._keys = [k.encode() for k in service.settings.api_keys]

    def _key_ok(self, key: str) -> bool:
        given = key.encode()
        ok = False
        for k in self._keys:  # constant time per key, no early exit
            ok |= hmac.compare_digest(given, k)
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        observe = self.service.observe
        record = observe.begin(scope)  # one access-log line and request metrics per request
        send = observe.sending(record, send)
        try:
            if scope.get("path") != CHAT_PATH:
                await self.app(scope, receive, send)
                return
            try:
                await self._chat(scope, receive, send)
            except APIError as err:
                await _send(send, err.status, err.headers, err.body_bytes())
        finally:
            observe.finish(record)

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = str(scope.get("method", "")).upper()
        scheme, value = _scheme(scope)
        if method == "HEAD" and self.paid is not None:
            await self.paid(scope, receive, _paid_send(send))
            return
        if method != "POST":
            await self.app(scope, receive, send)  # 405 from the router
            return
        try:
            body = await _read_body(receive)
        except ClientDisconnected:
            return  # half a request: nothing to verify, charge or answer
        if not body and scheme == "payment" and self.paid is not None:  # voucher / close
            await self.paid(scope, replay_body(body, receive), _paid_send(send))
            return
        req = parse_request(body)
        planned = (req, self.service.plan(req))
        inner: Scope = {**scope, _PLANNED: planned}
        if scheme == "bearer":
            if not self._key_ok(value):
                raise APIError.invalid_api_key()
            await self.app(inner, replay_body(body, receive), send)
        elif self.paid is not None:
            await self.paid(inner, replay_body(body, receive), _paid_send(send))
        else:
            raise APIError(
                401,
                "You didn't provide an API key (Authorization: Bearer <key>).",
                type="authentication_error",
                code="missing_api_key",
            )


async def _read_body(receive: Receive) -> bytes:
    body = await read_body(receive, MAX_BODY_BYTES)
    if body is None:
        raise APIError.bad_request("Request body too large.", None, "body_too_large")
    return body


async def _send(send: Send, status: int, headers: Mapping[str, str], body: bytes) -> None:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    raw += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _paid_send(send: Send) -> Send:
    """The paid path's `send`: problem+json bodies gain the OpenAI `error` object. (The final
    `payment-receipt` event before a stream's `data: [DONE]` is the middleware's: SES-32.)"""
    held: Message | None = None
    body = b""

    async def wrapped(message: Message) -> None:
        nonlocal held, body
        if message["type"] == "http.response.start":
            ctype = dict(message.get("headers", [])).get(b"content-type", b"")
            if bytes(ctype).startswith(b"application/problem+json"):
                held = message
                return
        elif held is not None and message["type"] == "http.response.body":
            body += bytes(message.get("body", b""))
            if message.get("more_body", False):
                return
            new = _merge_problem(body)
            headers = [(k, v) for k, v in held.get("headers", []) if k != b"content-length"]
            headers.append((b"content-length", str(len(new)).encode()))
            await send({**held, "headers": headers})
            await send({"type": "http.response.body", "body": new, "more_body": False})
            held = None
            return
        await send(message)

    return wrapped


def _merge_problem(body: bytes) -> bytes:
    try:
        problem = json.loads(body)
    except ValueError:
        return body
    if not isinstance(problem, dict):
        return body
    kind = str(problem.get("type", "")).rsplit("/", 1)[-1] or "payment_error"
    problem["error"] = {
        "message": str(problem.get("detail") or problem.get("title") or "Payment error"),
        "type": "payment_required" if problem.get("status") == 402 else "payment_error",
        "param": None,
        "code": kind,
    }
    return json.dumps(problem, separators=(",", ":")).encode()


def _request_streams(info: RequestInfo) -> bool:
    """Whether a chat request will be answered as a stream (then it pays per token with a
    session only; a JSON answer may pay `charge_per_request` once instead)."""
    try:
        request = parse_request(info.body)
    except APIError:
        return True  # answered 400 either way: offer the default
    return streams(request, info.header("accept"))


def create_app(settings: InferenceSettings) -> ASGIApp:
    """The ASGI app: `/v1/chat/completions` (Bearer or Payment), `GET /v1/models`,
    `GET /metrics` (Prometheus) and, with an admin key, the operator page
    (mpp.inference.operator)."""
    routes = frozenset({CHAT_PATH, "/v1/models", "/metrics"}) | OPERATOR_PATHS
    observe = Observability(settings, routes)
    service = _Service(settings, observe)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await settings.registry.aclose()

    inner = Starlette(
        routes=[
            Route(CHAT_PATH, service.chat, methods=["POST"]),
            Route("/v1/models", service.models, methods=["GET"]),
            Route("/metrics", observe.metrics, methods=["GET"]),
            *operator_routes(settings, observe),  # none without an admin key
        ],
        lifespan=lifespan,
    )
    paid: PaymentMiddleware | None = None
    if settings.payment is not None:
        pay = settings.payment
        price = Price(
            amount=settings.effective_unit_price,
            unit_type=UNIT_TYPE,
            suggested_deposit=settings.suggested_deposit,
            description="chat completion tokens",
            intents=("session", "charge") if pay.charge_per_request else ("session",),
            charge_amount=pay.charge_per_request,
        )
        route = PaidRoute(CHAT_PATH, price, streams=_request_streams)
        gate = PaymentGate(
            pay.engine,
            pay.issuer,
            [route],
            failure_rate=pay.failure_rate,
            observer=observe.payment,
        )
        paid = PaymentMiddleware(
            inner,
            gate,
            voucher_timeout=pay.voucher_timeout,
            reserve_units=pay.reserve_units,
            waiters=pay.waiters,
        )
    return _Front(service, inner, paid)
