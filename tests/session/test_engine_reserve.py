"""A voucher and the request's reservation in ONE durable write (SES-20, SES-27/28, SES-30).

`SessionServer.handle(voucher, reserve=…)` folds the reservation into the voucher's own
transaction: a paid request on an open channel makes one store write before it is served. A
fixed price is all or nothing (the voucher is kept either way); a metered headroom is partial.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mpp.core.errors import InsufficientBalance
from mpp.session.engine import SessionServer
from mpp.session.ports import ChannelState, Mutation
from mpp.store.memory import MemoryStore
from tests.session._workers import CID, NOW, NoChain, state, terms, voucher


class CountingStore(MemoryStore):
    """The real memory store, counting its transactions."""

    def __init__(self) -> None:
        super().__init__()
        self.updates = 0

    def update(
        self, channel_id: str, decide: Callable[[ChannelState | None], Mutation]
    ) -> ChannelState | None:
        self.updates += 1
        return super().update(channel_id, decide)


def server_with(**kw: Any) -> tuple[SessionServer, CountingStore]:
    store = CountingStore()
    store.update(CID, lambda _cur: Mutation(state(**kw)))
    store.updates = 0
    return SessionServer(store, NoChain(), terms(), now=lambda: NOW), store


def test_ses_28_voucher_and_fixed_price_in_one_write() -> None:
    server, store = server_with(deposit=10_000, accepted_cumulative=100, spent=100)
    result = server.handle(voucher(1_100), challenge_id="c", reserve=1_000)
    assert (result.reserved, result.state.accepted_cumulative, result.state.spent) == (
        1_000,
        1_100,
        1_100,
    )
    assert store.updates == 1  # one durable write before serving
    # SES-33: receipts leave out what is reserved but not delivered yet
    assert server.receipt(result.state, challenge_id="c")["spent"] == "100"
    server.commit(CID, 1_000)
    assert server.receipt(result.state, challenge_id="c")["spent"] == "1100"


def test_ses_27_fixed_price_that_does_not_fit_keeps_the_voucher() -> None:
    """All or nothing: nothing reserved, the voucher persisted, the charge then says how much is
    missing (requiredTopUp)."""
    server, _ = server_with(deposit=10_000, accepted_cumulative=100, spent=100)
    result = server.handle(voucher(600), challenge_id="c", reserve=1_000)
    assert result.reserved == 0 and result.state.accepted_cumulative == 600
    assert result.state.spent == 100
    with pytest.raises(InsufficientBalance) as err:
        server.charge(CID, 1_000, challenge_id="c", reserve=True)
    assert err.value.extensions["requiredTopUp"] == "500"


def test_ses_30_metered_headroom_is_partial_and_released() -> None:
    server, _ = server_with(deposit=10_000, accepted_cumulative=100, spent=100)
    result = server.handle(voucher(400), challenge_id="c", reserve=1_000, reserve_partial=True)
    assert result.reserved == 300 and result.state.spent == 400
    server.commit(CID, 120)  # delivered
    after = server.release(CID, 180)  # the rest goes back
    assert after is not None and after.spent == 220


def test_ses_22_equal_voucher_still_reserves() -> None:
    """An equal voucher is an idempotent success (no voucher change): the reservation alone is
    written."""
    server, store = server_with(deposit=10_000, accepted_cumulative=500, spent=100)
    result = server.handle(voucher(500), challenge_id="c", reserve=200)
    assert result.reserved == 200 and result.state.spent == 300 and store.updates == 1
