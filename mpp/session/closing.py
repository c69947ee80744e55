"""Ending a channel on the server: the payer's close voucher, the server's own closes, and what
an uncertain close leaves behind.

A close freezes the row first, so nothing more is served from it, not even from reservations
made before (SES-21), then the settler submits the capture (ESC-17: exactly what was
delivered, the rest refunded). A close whose transaction outcome is unknown (RPC outage,
dropped tx) keeps the row frozen until `reconcile` takes the chain's word; a definitive failure
unfreezes it at once. The settlement policy closes channels whose payer requested a close
(SES-38) and idle ones (SES-44) before it settles the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mpp.core.errors import ChannelFinalized, ChannelNotFound, PaymentError
from mpp.session import accounting as acc
from mpp.session.holds import Holds
from mpp.session.ports import ChannelState, Store
from mpp.session.settlement import Settler

__all__ = ["Closer"]

log = logging.getLogger(__name__)


class Closer:
    """Closes the channels of one SessionServer, keeping its holds in step (mpp.session.holds)."""

    def __init__(
        self, store: Store, settler: Settler, holds: Holds, *, now: Callable[[], int]
    ) -> None:
        self.store = store
        self._settler = settler
        self._holds = holds
        self._now = now

    def by_payer(
        self, channel_id: str, *, cum: int, signature: str, signer: str, challenge_id: str
    ) -> tuple[ChannelState, str]:
        """The payer's close voucher, its signer already recovered (before the store lock)."""
        now = self._now()
        frozen = self.store.update(
            channel_id,
            lambda cur: acc.apply_close(
                cur,
                cum=cum,
                signature=signature,
                signer=signer,
                challenge_id=challenge_id,
                now=now,
            ),
        )
        assert frozen is not None
        self._holds.freeze(frozen.channel_id)  # what is held now stays undelivered
        return self._submit(frozen, cum, signature)

    def by_server(self, channel_id: str) -> tuple[ChannelState, str]:
        """On the server's own initiative, with the stored vouchers."""
        now = self._now()
        frozen = self.store.update(channel_id, lambda cur: acc.apply_freeze(cur, now=now))
        assert frozen is not None
        self._holds.freeze(channel_id)
        return self._submit(frozen)

    def reconcile(self, channel_id: str) -> ChannelState:
        """After a close whose transaction outcome was unknown: take the chain's word."""
        state = self._settler.reconcile(channel_id)
        self._holds.follow(state)
        return state

    def run_policy(self) -> dict[str, str]:
        """The due closes, then the due settlements; {channelId: txHash}."""
        done: dict[str, str] = {}
        for cid in self._settler.due_closes():
            try:
                done[cid] = self.by_server(cid)[1]
            except (ChannelFinalized, ChannelNotFound):
                continue  # closed meanwhile (another process, the payer's withdraw)
            except PaymentError as exc:
                log.warning("closing channel %s failed (retried): %s", cid, exc.detail)
        done.update(self._settler.maybe_settle())
        return done

    def _submit(
        self, frozen: ChannelState, cum: int = 0, signature: str | None = None
    ) -> tuple[ChannelState, str]:
        try:
            return self._settler.close(frozen, cum, signature)
        finally:
            state = self.store.get(frozen.channel_id)
            if state is not None:
                self._holds.follow(state)  # unfrozen again when the close did not happen
