"""A request's cost on the server: charged before it is delivered (SES-27/28), then delivered
or given back (SES-30).

`spent` in the store and this process's holds (mpp.session.holds) change together under the
channel's lock, so a settlement never sees a reservation in `spent` that is missing from the
holds. Only what this process reserved and has not delivered can be given back, so `spent`
never drops below what was delivered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mpp.core.errors import ChannelNotFound
from mpp.session import accounting as acc
from mpp.session.holds import Holds
from mpp.session.ports import ChannelState, Store

__all__ = ["Reservations"]

log = logging.getLogger(__name__)


class Reservations:
    """Charges and releases on the channels of one SessionServer."""

    def __init__(self, store: Store, holds: Holds, *, now: Callable[[], int]) -> None:
        self.store = store
        self._holds = holds
        self._now = now

    def charge(self, channel_id: str, cost: int, *, reserve: bool) -> ChannelState:
        """Deduct `cost` and persist it; held until committed when `reserve`."""
        now = self._now()
        with self._holds.lock(channel_id):  # spent and holds change together
            new = self.store.update(channel_id, lambda cur: acc.apply_charge(cur, cost, now=now))
            assert new is not None
            if reserve:
                self._holds.add(channel_id, cost)
        return new

    def release(
        self, channel_id: str, amount: int, *, challenge_id: str | None
    ) -> ChannelState | None:
        """Give back up to `amount` of what is held (accounting.apply_release)."""
        now = self._now()
        with self._holds.lock(channel_id):  # spent and holds change together
            back = self._holds.take(channel_id, amount)
            if back < amount:
                log.warning(
                    "release of %d on %s exceeds its reservation", amount - back, channel_id
                )
            if back == 0:
                return self.store.get(channel_id)
            log.debug("release %d on %s (challenge %s)", back, channel_id, challenge_id)
            try:
                return self.store.update(
                    channel_id, lambda cur: acc.apply_release(cur, back, now=now)
                )
            except ChannelNotFound:
                return None
            except BaseException:
                self._holds.add(channel_id, back)  # still charged in the store: still held
                raise
