"""Which state a credential is checked against: the store's row, re-read from chain on a TTL.

A channel this process has not seen is adopted from chain once; an id that is not on chain is
remembered for `refresh_ttl`, so a stranger sending garbage ids costs at most one chain read per
id and TTL (SES-42). During an RPC outage the stored state keeps serving and the read is retried
after the TTL. A channel of another escrow, chain, payee or token does not exist for the route.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from mpp.core.errors import ChainUnavailable, ChannelFinalized, ChannelNotFound, VerificationFailed
from mpp.session import accounting as acc
from mpp.session.holds import Holds
from mpp.session.ports import Chain, ChannelState, Mutation, Store
from mpp.session.terms import SessionTerms

__all__ = ["ChannelLookup", "check_route"]

log = logging.getLogger(__name__)

_MISSING_CACHE_MAX = 10_000


def check_route(state: ChannelState, terms: SessionTerms) -> None:
    """A channel of another escrow, chain, payee or token does not exist for this route."""
    if state.escrow != terms.escrow_contract or state.chain_id != terms.chain_id:
        raise ChannelNotFound("channel belongs to another escrow or chain")
    if state.payee != terms.recipient or state.token != terms.currency:
        raise VerificationFailed("channel payee or token does not match this route")


@dataclass
class _Memo:
    # In-process only (never relied on for correctness): throttles chain reads.
    missing: dict[str, int] = field(default_factory=dict)  # unknown ids → when checked
    refresh_attempt: dict[str, int] = field(default_factory=dict)


class ChannelLookup:
    """The stored channels of one SessionServer, kept in step with the chain."""

    def __init__(
        self,
        store: Store,
        chain: Chain,
        holds: Holds,
        *,
        now: Callable[[], int],
        refresh_ttl: int,
    ) -> None:
        self.store = store
        self.chain = chain
        self.refresh_ttl = refresh_ttl
        self._holds = holds
        self._now = now
        self._memo = _Memo()

    def get(self, channel_id: str, terms: SessionTerms) -> ChannelState:
        """The stored state, refreshed on the TTL; an unknown id is looked up on chain once."""
        state = self.store.get(channel_id)
        if state is None:
            state = self._adopt(channel_id, terms)
        check_route(state, terms)
        return self._refresh_if_stale(state)

    def refresh(self, channel_id: str) -> ChannelState:
        """Re-read the channel from chain and merge it (deposit, settled, close request)."""
        state = self.store.get(channel_id)
        if state is None:
            raise ChannelNotFound("unknown channel")
        onchain = self.chain.read_channel(state.escrow, state.channel_id)
        now = self._now()
        new = self.store.update(channel_id, lambda cur: acc.apply_refresh(cur, onchain, now=now))
        assert new is not None
        self._holds.follow(new)
        return new

    def _adopt(self, channel_id: str, terms: SessionTerms) -> ChannelState:
        now = self._now()
        checked = self._memo.missing.get(channel_id)
        if checked is not None and now - checked < self.refresh_ttl:
            raise ChannelNotFound("unknown channel")
        onchain = self.chain.read_channel(terms.escrow_contract, channel_id)
        if not onchain.exists or onchain.finalized:
            if len(self._memo.missing) >= _MISSING_CACHE_MAX:
                self._memo.missing.clear()
            self._memo.missing[channel_id] = now
            if onchain.finalized:
                raise ChannelFinalized("channel is finalized")
            raise ChannelNotFound("unknown channel")
        fresh = acc.state_from_chain(
            onchain, escrow=terms.escrow_contract, chain_id=terms.chain_id, now=now
        )
        check_route(fresh, terms)
        adopted = self.store.update(
            channel_id, lambda cur: Mutation(fresh if cur is None else None)
        )
        assert adopted is not None
        return adopted

    def _refresh_if_stale(self, state: ChannelState) -> ChannelState:
        now = self._now()
        if state.finalized or now - state.refreshed_at < self.refresh_ttl:
            return state
        attempted = self._memo.refresh_attempt.get(state.channel_id, 0)
        if now - attempted < self.refresh_ttl:
            return state
        self._memo.refresh_attempt[state.channel_id] = now
        try:
            return self.refresh(state.channel_id)
        except ChainUnavailable:
            # Keep serving from the store during an RPC outage; retried after the TTL.
            log.warning("chain refresh failed for %s; using stored state", state.channel_id)
            return state
