"""One completion: try the planned providers in order until one yields its first token, then
stream it, charging the meter for every token before its text is handed on. The prompt is
paid before the model generates (once the provider tells its size), so a payer that cannot pay
costs no model work.

Fallback happens only before the first token (nothing has reached the client yet); `timeout_ms`
bounds each attempt up to that first token and its expiry counts as that provider failing. A
failure after it is reported as `Failed` and the stream ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from mpp.inference.api import APIError
from mpp.inference.chunks import Usage
from mpp.inference.pricing import UnitCursor
from mpp.inference.providers.base import (
    Finish,
    GenerationParams,
    ProviderError,
    ProviderEvent,
    Start,
    Token,
)
from mpp.inference.registry import ProviderEntry

__all__ = [
    "Attempt",
    "Delta",
    "Done",
    "Failed",
    "Meter",
    "PromptCharges",
    "PromptPayment",
    "Stopped",
    "Unpaid",
    "charge_prompt",
    "hold_answer",
    "run",
    "start",
]

log = logging.getLogger(__name__)


class Meter(Protocol):
    """Charges whole units before the corresponding output is sent.

    Returns False when the payer stopped paying (no voucher in time): the stream must end.
    """

    async def charge(self, units: int) -> bool: ...

    async def hold(self, units: int) -> bool:
        """Reserve `units` for an answer sent whole; False: unpaid (the answer is a 402)."""
        ...

    def give_back(self, units: int) -> None:
        """Undo a charge made before anything was sent."""


class FreeMeter:
    """The Bearer (API key) path: nothing to charge."""

    async def charge(self, units: int) -> bool:
        return True

    async def hold(self, units: int) -> bool:
        return True

    def give_back(self, units: int) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Delta:
    text: str


@dataclass(frozen=True, slots=True)
class Done:
    finish_reason: str
    usage: Usage


@dataclass(frozen=True, slots=True)
class Failed:
    message: str
    usage: Usage


@dataclass(frozen=True, slots=True)
class Stopped:
    """The meter refused (unpaid): end quietly, the payment layer says why."""

    usage: Usage


Outcome = Delta | Done | Failed | Stopped


@dataclass
class Attempt:
    """A provider that has produced its first token (or finished without any)."""

    entry: ProviderEntry
    events: AsyncIterator[ProviderEvent]
    buffered: list[ProviderEvent]
    started: float
    first_token_at: float


# Called when a provider tells the prompt size, before it generates: False stops the request
# (unpaid) without the model's work. A provider without a `Start` event is paid after its
# first token instead (`charge_prompt`).
PromptPayment = Callable[[ProviderEntry, int], Awaitable[bool]]


class Unpaid(Exception):
    """The prompt could not be paid: nothing was generated, the answer is a 402."""


async def _until_first(
    entry: ProviderEntry, events: AsyncIterator[ProviderEvent], pay_prompt: PromptPayment | None
) -> list[ProviderEvent]:
    out: list[ProviderEvent] = []
    async for event in events:
        out.append(event)
        if isinstance(event, Start) and pay_prompt is not None:
            if not await pay_prompt(entry, event.prompt_tokens):
                raise Unpaid
        if isinstance(event, Token | Finish):
            return out
    raise ProviderError("provider ended without a Finish")


async def _close(events: AsyncIterator[ProviderEvent]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # a broken provider must not break the fallback
            log.debug("provider stream close failed", exc_info=True)


async def start(
    plan: Sequence[ProviderEntry],
    params: GenerationParams,
    timeout_s: float,
    pay_prompt: PromptPayment | None = None,
) -> Attempt:
    """The first provider of `plan` that produces a token within `timeout_s`; else 502.
    `pay_prompt` pays each provider's prompt before it generates (raises Unpaid)."""
    for entry in plan:
        events = entry.provider.stream(params)
        began = time.perf_counter()
        try:
            buffered = await asyncio.wait_for(_until_first(entry, events, pay_prompt), timeout_s)
        except Unpaid:
            await _close(events)
            raise
        except (ProviderError, TimeoutError) as exc:
            log.info("provider %s failed before first token: %s", entry.name, type(exc).__name__)
        except Exception:  # an unexpected provider bug counts as that provider failing
            log.exception("provider %s raised before first token", entry.name)
        else:
            return Attempt(entry, events, buffered, began, time.perf_counter())
        await _close(events)
        entry.stats.observe_failure()
    raise APIError.all_failed(f"All {len(plan)} providers failed for model {params.model!r}.")


class PromptCharges:
    """A request's prompt, paid before the model generates (`pay` is `start`'s PromptPayment).

    One provider's prompt at a time: when a provider fails before its first token and the next
    is tried, what the first was charged goes back (nothing was sent), so the request pays the
    prompt of the provider that answers, at that provider's price."""

    def __init__(self, meter: Meter, unit_price: int) -> None:
        self._meter, self._unit_price = meter, unit_price
        self._paid: tuple[ProviderEntry, UnitCursor, int] | None = None  # entry, cursor, units

    async def pay(self, entry: ProviderEntry, prompt_tokens: int) -> bool:
        self._give_back()
        cursor = UnitCursor(entry.provider.price, self._unit_price)
        units = cursor.due(prompt_tokens, 0)
        if units and not await self._meter.charge(units):
            return False
        cursor.record(units)
        self._paid = (entry, cursor, units)
        return True

    def cursor_for(self, entry: ProviderEntry) -> UnitCursor:
        """The cursor of the provider that answers (its prompt paid, or not yet)."""
        if self._paid is not None and self._paid[0] is entry:
            return self._paid[1]
        self._give_back()
        return UnitCursor(entry.provider.price, self._unit_price)

    def _give_back(self) -> None:
        if self._paid is not None:
            self._meter.give_back(self._paid[2])
            self._paid = None


async def hold_answer(attempt: Attempt, cursor: UnitCursor, meter: Meter, max_tokens: int) -> bool:
    """A JSON answer is sent whole once generated, so it cannot pause for a voucher halfway:
    hold what its longest outcome (the prompt plus `max_tokens`) costs before generating
    (Meter.hold). False: unpaid, the answer is a 402 with the exact shortfall; the unused part
    of the hold goes back at the end, so the payer pays exactly its usage."""
    units = cursor.due(_prompt_tokens(attempt), max_tokens)
    if units and not await meter.hold(units):
        await _close(attempt.events)
        return False
    return True


def _prompt_tokens(attempt: Attempt) -> int:
    return next((e.prompt_tokens for e in attempt.buffered if isinstance(e, Start)), 0)


async def charge_prompt(attempt: Attempt, cursor: UnitCursor, meter: Meter) -> bool:
    """Charge the prompt before the response starts, so the response's first receipt already
    covers it: a paying client counts every later unit from the stream itself (one per token,
    mpp.session.budget) and could not tell a prompt charge from an overreach. False: unpaid."""
    units = cursor.due(_prompt_tokens(attempt), 0)
    if units and not await meter.charge(units):
        await _close(attempt.events)
        return False
    cursor.record(units)
    return True


async def _chained(attempt: Attempt) -> AsyncIterator[ProviderEvent]:
    for event in attempt.buffered:
        yield event
    async for event in attempt.events:
        yield event


async def run(attempt: Attempt, cursor: UnitCursor, meter: Meter) -> AsyncIterator[Outcome]:
    """Stream one started attempt; always ends with exactly one Done, Failed or Stopped."""
    prompt = completion = 0
    last_token_at = attempt.first_token_at
    stats = attempt.entry.stats

    async def pay() -> bool:
        units = cursor.due(prompt, completion)
        if units and not await meter.charge(units):
            return False
        cursor.record(units)
        return True

    try:
        async for event in _chained(attempt):
            if isinstance(event, Start):
                prompt = event.prompt_tokens
            elif isinstance(event, Token):
                completion += event.count
                if not await pay():
                    yield Stopped(Usage(prompt, completion))
                    return
                if event.count:
                    last_token_at = time.perf_counter()
                if event.text:
                    yield Delta(event.text)
            else:
                # The provider's own counts are the real ones (upstreams report them only here).
                prompt = event.prompt_tokens if event.prompt_tokens is not None else prompt
                completion = max(completion, event.completion_tokens or 0)
                if not await pay():
                    yield Stopped(Usage(prompt, completion))
                    return
                stats.observe(
                    attempt.first_token_at - attempt.started,
                    completion,
                    last_token_at - attempt.first_token_at,
                )
                yield Done(event.reason, Usage(prompt, completion))
                return
        raise ProviderError("provider ended without a Finish")
    except ProviderError as exc:
        stats.observe_failure()
        yield Failed(str(exc), Usage(prompt, completion))
    except Exception:
        stats.observe_failure()
        log.exception("provider %s failed mid-stream", attempt.entry.name)
        yield Failed("provider failed mid-stream", Usage(prompt, completion))
    finally:
        await _close(attempt.events)
