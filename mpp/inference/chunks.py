"""OpenAI wire shapes: `chat.completion.chunk` SSE lines, the final usage chunk, `[DONE]`, and the
non-streaming `chat.completion` body."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any, Final

from mpp.session.scheme import END_OF_STREAM

__all__ = ["DONE", "ChunkWriter", "Usage", "completion_body"]

# The stream's terminator is the session scheme's: the payment layer puts the final receipt
# before exactly these bytes (SES-32).
DONE: Final = END_OF_STREAM


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def new_completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


class ChunkWriter:
    """Formats the chunks of one streamed completion (same id, created and model throughout)."""

    def __init__(self, model: str, created: int, completion_id: str | None = None) -> None:
        self.id = completion_id or new_completion_id()
        self.model = model
        self.created = created
        head = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        # Every content chunk shares this prefix; only the escaped text changes (hot path).
        self._prefix = b"data: " + _dumps(head)[:-1] + b',"choices":[{"index":0,"delta":{"content":'
        self._suffix = b'},"logprobs":null,"finish_reason":null}]}\n\n'

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }
        return b"data: " + _dumps(body) + b"\n\n"

    def role(self) -> bytes:
        delta = {"role": "assistant", "content": ""}
        return self._chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])

    def content(self, text: str) -> bytes:
        return self._prefix + _dumps(text) + self._suffix

    def finish(self, reason: str) -> bytes:
        return self._chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}])

    def usage(self, usage: Usage) -> bytes:
        return self._chunk([], usage=usage.as_dict())

    @staticmethod
    def error(message: str, code: str = "provider_failed") -> bytes:
        """An in-stream error (the openai SDK raises `APIError` on it)."""
        err = {"message": message, "type": "api_error", "param": None, "code": code}
        return b"data: " + _dumps({"error": err}) + b"\n\n"


def completion_body(
    *,
    completion_id: str,
    model: str,
    created: int,
    text: str,
    finish_reason: str,
    usage: Usage,
    provider: str | None = None,
) -> bytes:
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage.as_dict(),
    }
    if provider is not None:
        body["provider"] = provider
    return _dumps(body)
