"""The wire boundary of `/v1/chat/completions`: the request model and the OpenAI error bodies.

Every rejection is an `APIError` with the OpenAI body `{"error": {message, type, param, code}}`;
the server turns it into a response and never lets a traceback reach the peer.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_TIMEOUT_MS",
    "APIError",
    "ChatCompletionRequest",
    "ChatMessage",
    "RoutingStrategy",
    "parse_request",
]

MAX_BODY_BYTES: Final = 1 << 20
MAX_TIMEOUT_MS: Final = 30_000
DEFAULT_MAX_TOKENS: Final = 4096
MAX_STOP_SEQUENCES: Final = 4

Number = StrictInt | StrictFloat


class APIError(Exception):
    """An error answer; `headers` carries `x-should-retry` / `Retry-After` for 5xx."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def body_bytes(self) -> bytes:
        return json.dumps(self.body(), separators=(",", ":")).encode()

    @classmethod
    def bad_request(
        cls, message: str, param: str | None = None, code: str | None = None
    ) -> APIError:
        return cls(400, message, param=param, code=code or "invalid_value")

    @classmethod
    def invalid_api_key(cls) -> APIError:
        return cls(401, "Invalid API key.", type="authentication_error", code="invalid_api_key")

    @classmethod
    def all_failed(cls, message: str) -> APIError:
        # SDKs retry 5xx twice unless told not to: a failed routing pass will fail again.
        return cls(
            502,
            message,
            type="api_error",
            code="all_providers_failed",
            headers={"x-should-retry": "false"},
        )

    @classmethod
    def unavailable(cls, message: str, retry_after: int = 1) -> APIError:
        return cls(
            503,
            message,
            type="api_error",
            code="no_provider_available",
            headers={"x-should-retry": "false", "Retry-After": str(retry_after)},
        )


class RoutingStrategy(StrEnum):
    CHEAPEST = "cheapest"
    FASTEST = "fastest"
    BALANCED = "balanced"


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[TextPart] | None = None
    name: StrictStr | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    include_usage: StrictBool | None = None  # accepted for SDK compatibility; usage is always sent


class ChatCompletionRequest(BaseModel):
    """The request body; unknown parameters are refused (400 `unknown_parameter`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Annotated[StrictStr, Field(min_length=1, max_length=256)]
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=1024)]
    stream: StrictBool | None = None  # omitted: see `streams`
    max_tokens: Annotated[StrictInt, Field(ge=1, le=DEFAULT_MAX_TOKENS)] = DEFAULT_MAX_TOKENS
    temperature: Annotated[Number, Field(ge=0, le=2)] | None = None  # None: the model's own
    top_p: Annotated[Number, Field(gt=0, le=1)] | None = None
    stop: StrictStr | Annotated[list[StrictStr], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    frequency_penalty: Annotated[Number, Field(ge=-2, le=2)] | None = None
    presence_penalty: Annotated[Number, Field(ge=-2, le=2)] | None = None
    timeout_ms: Annotated[StrictInt, Field(ge=1, le=MAX_TIMEOUT_MS)] = MAX_TIMEOUT_MS
    routing_strategy: RoutingStrategy = RoutingStrategy.BALANCED
    allow_external: StrictBool | None = None
    # Cents per million tokens: exact integers, never floats (money).
    max_input_price_per_million: Annotated[StrictInt, Field(ge=0)] | None = None
    max_output_price_per_million: Annotated[StrictInt, Field(ge=0)] | None = None
    # Accepted OpenAI extras.
    stream_options: StreamOptions | None = None
    n: Annotated[StrictInt, Field(ge=1, le=1)] | None = None
    seed: StrictInt | None = None
    user: StrictStr | None = None

    @model_validator(mode="after")
    def _check(self) -> ChatCompletionRequest:
        if (self.max_input_price_per_million is None) != (
            self.max_output_price_per_million is None
        ):
            raise ValueError(
                "max_input_price_per_million and max_output_price_per_million "
                "must be set together, or neither"
            )
        if isinstance(self.stop, list) and any(not s for s in self.stop):
            raise ValueError("stop sequences must be non-empty")
        if self.stop == "":
            raise ValueError("stop sequences must be non-empty")
        return self

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def include_external(self) -> bool:
        """`allow_external` defaults to true for balanced/fastest and false for cheapest."""
        if self.allow_external is not None:
            return self.allow_external
        return self.routing_strategy is not RoutingStrategy.CHEAPEST

    @property
    def price_ceiling(self) -> tuple[int, int] | None:
        if self.max_input_price_per_million is None or self.max_output_price_per_million is None:
            return None
        return self.max_input_price_per_million, self.max_output_price_per_million


_NUMBERS = frozenset({"temperature", "top_p", "frequency_penalty", "presence_penalty"})


def _param_of(loc: tuple[int | str, ...]) -> str | None:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
        elif item in {"str", "list[TextPart]", "list[str]", "int", "float"} or "[" in item:
            continue  # a union branch name, not a field
        else:
            parts.append(item)
    return ".".join(parts) or None


def _from_validation(exc: ValidationError) -> APIError:
    first = exc.errors(include_url=False)[0]
    kind = str(first.get("type", ""))
    loc = tuple(first.get("loc", ()))
    param = _param_of(loc)
    message = str(first.get("msg", "invalid request"))
    if kind == "extra_forbidden":
        return APIError.bad_request(
            f"Unrecognized request argument supplied: {param}", param, "unknown_parameter"
        )
    if kind == "missing":
        return APIError.bad_request(
            f"Missing required parameter: '{param}'.", param, "missing_required_parameter"
        )
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
        if "price_per_million" in message:
            param = "max_input_price_per_million"
        elif "stop" in message:
            param = "stop"
    code = "invalid_type" if kind.endswith("_type") else None
    if code and param in _NUMBERS:
        message = "Input should be a number"
    return APIError.bad_request(f"Invalid value for '{param}': {message}", param, code)


def streams(req: ChatCompletionRequest, accept: str | None) -> bool:
    """Whether to answer with SSE. An explicit `stream` decides. When it is omitted, the seed
    platform streams, but the openai SDK (and any JSON-only client) expects a JSON body unless
    it asked for a stream. So an omitted `stream` streams unless the request's Accept header
    names `application/json` and not `text/event-stream`."""
    if req.stream is not None:
        return req.stream
    if not accept:
        return True
    media = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    return "text/event-stream" in media or "application/json" not in media


def parse_request(body: bytes) -> ChatCompletionRequest:
    """Decode and validate a request body, or raise a 400 `APIError`."""
    if len(body) > MAX_BODY_BYTES:
        raise APIError.bad_request("Request body too large.", None, "body_too_large")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise APIError.bad_request(
            "We could not parse the JSON body of your request.", None, "invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise APIError.bad_request("The request body must be a JSON object.", None, "invalid_json")
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        raise _from_validation(exc) from None
