"""What a provider is: a model server that streams tokens for a chat request.

A provider yields `Token` events (one per generated token, in order) and ends with one `Finish`.
`Start` (optional, first) tells the prompt size when the provider knows it before generating.
Any failure is raised as `ProviderError`; the router decides whether it may fall back.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal

from mpp.inference.pricing import Price

__all__ = [
    "Finish",
    "FinishReason",
    "GenerationParams",
    "Provider",
    "ProviderError",
    "ProviderEvent",
    "Start",
    "StopMatcher",
    "Token",
]

FinishReason = Literal["stop", "length"]


class ProviderError(Exception):
    """A provider could not serve (or finish) a request. The message is safe to show."""


@dataclass(frozen=True, slots=True)
class GenerationParams:
    model: str
    messages: tuple[tuple[str, str], ...]  # (role, text)
    max_tokens: int
    temperature: float | None = None  # None: the provider's default
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class Start:
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class Token:
    """`count` generated tokens (1; 0 for text held back by a stop matcher and released)."""

    text: str
    count: int = 1


@dataclass(frozen=True, slots=True)
class Finish:
    reason: FinishReason
    prompt_tokens: int | None = None  # the provider's own count, when it reports one
    completion_tokens: int | None = None


ProviderEvent = Start | Token | Finish


class Provider(abc.ABC):
    """A named source of completions for some model ids, at a price."""

    def __init__(
        self, name: str, models: Sequence[str], price: Price, *, external: bool = False
    ) -> None:
        if not name or not models:
            raise ValueError("a provider needs a name and at least one model id")
        self.name = name
        self.models = tuple(models)
        self.price = price
        self.external = external

    @abc.abstractmethod
    def stream(self, params: GenerationParams) -> AsyncIterator[ProviderEvent]:
        """Generate; closing the iterator early must stop the work behind it."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections or threads."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class StopMatcher:
    """Cuts streamed text at the first stop sequence, holding back text that may start one."""

    __slots__ = ("_held", "_stops", "stopped")

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The text that can be sent now (possibly empty)."""
        if self.stopped:
            return ""
        if not self._stops:
            return text
        buf = self._held + text
        cut = min((i for i in (buf.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return buf[:cut]
        keep = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(buf)), 0, -1):
                if buf.endswith(stop[:n]):
                    keep = max(keep, n)
                    break
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        """Text still held back when generation ends without a stop."""
        held, self._held = self._held, ""
        return "" if self.stopped else held
