"""The paying chat client: `ChatClient` (sync), `AsyncChatClient`, the `openai` SDK hook-up, and
`run_chat` for the `mpp chat` command.

Payment is the `mpp.http.PaymentAuth` of an httpx client: it answers the 402, opens or reuses a
channel, signs vouchers (and tops up) when the stream asks, and strips the payment events before
this module parses the OpenAI chunks. Nothing here knows the protocol.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import IO, Any

import httpx

from mpp.core.amounts import decimal_amount, format_decimals
from mpp.http.client import RECEIPTS_KEY, PaymentAuth
from mpp.session.payer import Payer

__all__ = [
    "AsyncChatClient",
    "AsyncChatStream",
    "ChatClient",
    "ChatError",
    "ChatStream",
    "Messages",
    "format_usd",
    "openai_async_http_client",
    "openai_http_client",
    "run_chat",
]

DEFAULT_MODEL: str | None = None  # the first model the server lists (GET /v1/models)
UNIT_PRICE_HEADER = "x-mpp-unit-price"  # mpp.inference.server.UNIT_PRICE_HEADER
Messages = str | Sequence[Mapping[str, Any]]


class ChatError(Exception):
    """The server refused the request (status ≥ 400) or the stream reported an error."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _messages(messages: Messages) -> list[dict[str, Any]]:
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    return [dict(m) for m in messages]


def _error_of(status: int, body: bytes) -> ChatError:
    try:
        err = json.loads(body).get("error", {})
    except (ValueError, AttributeError):
        err = {}
    message = err.get("message") if isinstance(err, dict) else None
    code = err.get("code") if isinstance(err, dict) else None
    return ChatError(
        str(message or f"HTTP {status}"), status, code if isinstance(code, str) else None
    )


def _drop_bearer(request: httpx.Request) -> None:
    # The openai SDK always sends `Authorization: Bearer <api_key>`; a paying client must not
    # (the server would check it as an API key). Payment credentials are kept.
    if request.headers.get("authorization", "").lower().startswith("bearer "):
        del request.headers["authorization"]


async def _adrop_bearer(request: httpx.Request) -> None:
    _drop_bearer(request)


def _auth(payer: Payer | PaymentAuth, **kw: Any) -> PaymentAuth:
    return payer if isinstance(payer, PaymentAuth) else PaymentAuth(payer, **kw)


class _WithoutBearer(httpx.Auth):
    """Drops the SDK's bearer before the payment flow sees the request, so that a paid request
    on an open channel carries its Payment credential on the first attempt (PaymentAuth pays
    ahead only for requests without an `Authorization` of their own)."""

    def __init__(self, payment: PaymentAuth) -> None:
        self.payment = payment

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        _drop_bearer(request)
        yield from self.payment.sync_auth_flow(request)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        _drop_bearer(request)
        flow = self.payment.async_auth_flow(request)
        request = await flow.__anext__()
        while True:
            response = yield request
            try:
                request = await flow.asend(response)
            except StopAsyncIteration:
                break


def openai_http_client(
    payer: Payer | PaymentAuth, *, timeout: float = 120.0, **auth_kw: Any
) -> httpx.Client:
    """An `httpx.Client` for `openai.OpenAI(http_client=...)` that pays (any `api_key` works)."""
    return httpx.Client(
        auth=_WithoutBearer(_auth(payer, **auth_kw)),
        timeout=timeout,
        event_hooks={"request": [_drop_bearer]},
    )


def openai_async_http_client(
    payer: Payer | PaymentAuth, *, timeout: float = 120.0, **auth_kw: Any
) -> httpx.AsyncClient:
    """The same for `openai.AsyncOpenAI(http_client=...)`."""
    return httpx.AsyncClient(
        auth=_WithoutBearer(_auth(payer, **auth_kw)),
        timeout=timeout,
        event_hooks={"request": [_adrop_bearer]},
    )


@dataclass
class _Parser:
    """Sans-I/O: SSE lines of an OpenAI chunk stream in, content deltas out."""

    usage: dict[str, int] | None = None
    finish_reason: str | None = None
    error: ChatError | None = None
    done: bool = False

    def line(self, line: str) -> str | None:
        if not line.startswith("data:"):
            return None
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return None
        chunk = json.loads(data)
        if not isinstance(chunk, dict):
            return None
        if isinstance(chunk.get("error"), dict):
            err = chunk["error"]
            self.error = ChatError(str(err.get("message", "stream error")), None, err.get("code"))
            return None
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        text = None
        for choice in chunk.get("choices") or ():
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
            content = (choice.get("delta") or {}).get("content")
            if isinstance(content, str) and content:
                text = content
        return text


@dataclass
class _Result:
    """What a finished request leaves: usage, receipts and what it cost."""

    provider: str | None = None
    unit_price: int | None = None
    receipts: list[dict[str, Any]] = field(default_factory=list)
    parser: _Parser = field(default_factory=_Parser)

    @property
    def usage(self) -> dict[str, int] | None:
        return self.parser.usage

    @property
    def finish_reason(self) -> str | None:
        return self.parser.finish_reason

    @property
    def units(self) -> int:
        """Metered units of this request, from the final receipt (0 when unpaid)."""
        for receipt in reversed(self.receipts):
            if isinstance(receipt.get("units"), int):
                return int(receipt["units"])
        return 0

    @property
    def spent(self) -> int:
        """Base units paid for this request: the final receipt's `cost` (units × unit price
        from a server that does not send it)."""
        final = self._final()
        cost = decimal_amount(str(final.get("cost", ""))) if final is not None else None
        return cost if cost is not None else self.units * (self.unit_price or 0)

    @property
    def balance(self) -> int | None:
        """What the channel can still pay after this request (base units), when the server
        says (the final receipt's `balance`)."""
        final = self._final()
        if final is None or "balance" not in final:
            return None
        return decimal_amount(str(final["balance"]))

    def _final(self) -> dict[str, Any] | None:
        return next((r for r in reversed(self.receipts) if "units" in r), None)

    def _take(self, response: httpx.Response) -> None:
        self.provider = response.headers.get("x-mpp-provider")
        price = response.headers.get(UNIT_PRICE_HEADER, "")
        self.unit_price = decimal_amount(price)

    def _finish(self, response: httpx.Response) -> None:
        self.receipts = list(response.extensions.get(RECEIPTS_KEY, []))
        if self.parser.error is not None:
            raise self.parser.error


class ChatStream(_Result):
    """Iterate for text deltas; afterwards `usage`, `receipts`, `units`, `spent` are set."""

    def __init__(self, client: httpx.Client, request: httpx.Request) -> None:
        super().__init__()
        self._client, self._request = client, request
        self.text = ""

    def __iter__(self) -> Generator[str, None, None]:
        response = self._client.send(self._request, stream=True)
        try:
            if response.status_code >= 400:
                raise _error_of(response.status_code, response.read())
            self._take(response)
            for line in response.iter_lines():
                delta = self.parser.line(line)
                if delta:
                    self.text += delta
                    yield delta
        finally:
            response.close()
        self._finish(response)


class AsyncChatStream(_Result):
    def __init__(
        self, client: httpx.AsyncClient, request: Callable[[], Awaitable[httpx.Request]]
    ) -> None:
        super().__init__()
        self._client, self._request = client, request
        self.text = ""

    async def __aiter__(self) -> AsyncIterator[str]:
        response = await self._client.send(await self._request(), stream=True)
        try:
            if response.status_code >= 400:
                raise _error_of(response.status_code, await response.aread())
            self._take(response)
            async for line in response.aiter_lines():
                delta = self.parser.line(line)
                if delta:
                    self.text += delta
                    yield delta
        finally:
            await response.aclose()
        self._finish(response)


def _build(
    base_url: str, messages: Messages, model: str, params: Mapping[str, Any]
) -> tuple[str, dict[str, Any]]:
    body = {"model": model, "messages": _messages(messages), "stream": True, **params}
    return base_url.rstrip("/") + "/v1/chat/completions", body


def _model_entries(r: httpx.Response) -> list[dict[str, Any]]:
    try:
        data = r.json().get("data")
    except (ValueError, AttributeError):
        data = None
    if not isinstance(data, list):
        raise ChatError("the server's /v1/models answer is not a model list", r.status_code)
    return [m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]


def _first_id(models: list[dict[str, Any]]) -> str:
    if not models:
        raise ChatError("the server lists no model")
    return str(models[0]["id"])


class _ChatBase:
    """What both clients share: one of a payer (Payment) or an operator API key (Bearer)."""

    def __init__(
        self,
        base_url: str,
        *,
        payer: Payer | PaymentAuth | None = None,
        api_key: str | None = None,
        model: str | None = DEFAULT_MODEL,
        **auth_kw: Any,
    ) -> None:
        if (payer is None) == (api_key is None):
            raise ValueError("give exactly one of payer or api_key")
        self.base_url, self.model = base_url, model
        self.auth = _auth(payer, **auth_kw) if payer is not None else None
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}


class ChatClient(_ChatBase):
    """Chat with an MPP inference server, paying with `payer` (or an operator `api_key`)."""

    def __init__(self, base_url: str, *, timeout: float = 120.0, **kw: Any) -> None:
        super().__init__(base_url, **kw)
        self._http = httpx.Client(auth=self.auth, timeout=timeout, headers=self._headers)

    def __repr__(self) -> str:  # never show the key
        return f"ChatClient({self.base_url!r}, paid={self.auth is not None})"

    def models(self) -> list[dict[str, Any]]:
        """The server's `GET /v1/models` entries (ids, prices, how to pay)."""
        r = self._http.get(self.base_url.rstrip("/") + "/v1/models")
        if r.status_code >= 400:
            raise _error_of(r.status_code, r.content)
        return _model_entries(r)

    def default_model(self) -> str:
        """The client's model: the one it was given, else the first the server lists."""
        if self.model is None:
            self.model = _first_id(self.models())
        return self.model

    def stream(self, messages: Messages, *, model: str | None = None, **params: Any) -> ChatStream:
        url, body = _build(self.base_url, messages, model or self.default_model(), params)
        return ChatStream(self._http, self._http.build_request("POST", url, json=body))

    def complete(
        self, messages: Messages, *, model: str | None = None, **params: Any
    ) -> ChatStream:
        """Stream to the end and return the finished stream (`.text`, `.usage`, `.receipts`)."""
        stream = self.stream(messages, model=model, **params)
        for _ in stream:
            pass
        return stream

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncChatClient(_ChatBase):
    """The asyncio twin of `ChatClient`."""

    def __init__(self, base_url: str, *, timeout: float = 120.0, **kw: Any) -> None:
        super().__init__(base_url, **kw)
        self._http = httpx.AsyncClient(auth=self.auth, timeout=timeout, headers=self._headers)

    def __repr__(self) -> str:
        return f"AsyncChatClient({self.base_url!r}, paid={self.auth is not None})"

    async def models(self) -> list[dict[str, Any]]:
        r = await self._http.get(self.base_url.rstrip("/") + "/v1/models")
        if r.status_code >= 400:
            raise _error_of(r.status_code, r.content)
        return _model_entries(r)

    def stream(
        self, messages: Messages, *, model: str | None = None, **params: Any
    ) -> AsyncChatStream:
        async def request() -> httpx.Request:  # the model may need a look at the server
            url, body = _build(self.base_url, messages, model or await self.default_model(), params)
            return self._http.build_request("POST", url, json=body)

        return AsyncChatStream(self._http, request)

    async def default_model(self) -> str:
        if self.model is None:
            self.model = _first_id(await self.models())
        return self.model

    async def complete(
        self, messages: Messages, *, model: str | None = None, **params: Any
    ) -> AsyncChatStream:
        stream = self.stream(messages, model=model, **params)
        async for _ in stream:
            pass
        return stream

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def format_usd(amount: int, decimals: int = 6) -> str:
    """Base units of a USD stablecoin as a decimal amount (integer arithmetic)."""
    return f"{format_decimals(amount, decimals)} USD"


def run_chat(
    client: ChatClient,
    prompt: Messages,
    *,
    out: IO[str] | None = None,
    decimals: int = 6,
    stop: threading.Event | None = None,
    **params: Any,
) -> ChatStream:
    """What `mpp chat` does: stream the answer to `out`, then one line of usage and spend.

    `stop` set: the answer ends at its next chunk, without the usage line (the response is
    closed: only what arrived is paid)."""
    out = out or sys.stdout
    stream = client.stream(prompt, **params)
    deltas = iter(stream)
    try:
        for delta in deltas:
            out.write(delta)
            out.flush()
            if stop is not None and stop.is_set():
                break
    finally:
        deltas.close()  # the response closes now, nothing more is paid
        out.write("\n")
    if stop is not None and stop.is_set():
        return stream
    usage = stream.usage or {}
    spent = stream.spent
    line = (
        f"[{usage.get('prompt_tokens', '?')} prompt + {usage.get('completion_tokens', '?')} "
        f"completion tokens"
    )
    if client.auth is not None:
        line += f"; paid {stream.units} units = {format_usd(spent, decimals)} ({spent} base units)"
        if stream.balance is not None:
            line += f"; balance {format_usd(stream.balance, decimals)}"
    out.write(line + (f" via {stream.provider}]" if stream.provider else "]") + "\n")
    return stream
