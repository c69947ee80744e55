"""The session server engine: what happens when a session credential or a metered charge arrives.

`SessionServer.handle(payload, challenge_id=...)` dispatches open / topUp / voucher / close
(tempo v1, docs/protocol.md §2); `charge()` deducts a request's cost, optionally as a reservation
that is later committed (delivered) or released (given back, mpp.session.reservations);
`receipt()` and `need_voucher_event()` render what goes back to the client
(mpp.session.receipts); `check_challenge()` maps the core's challenge errors onto the
session's (AMB-05/06). The per-channel decisions are the pure functions in
mpp.session.accounting, run inside `Store.update`; this module and its helpers do the I/O around
them: signature recovery (here, before the store lock), chain reads on a short TTL
(mpp.session.lookup), broadcasts for open / topUp (mpp.session.funding), settle and close
(mpp.session.closing, mpp.session.settlement).

Synchronous by design: the ASGI layer calls it from a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mpp.core.binding import ChallengeIssuer
from mpp.core.challenge import Challenge
from mpp.core.errors import ChallengeExpired, ChallengeNotFound, ChannelFinalized
from mpp.session import accounting as acc
from mpp.session.closing import Closer
from mpp.session.funding import Funding
from mpp.session.holds import Holds
from mpp.session.lookup import ChannelLookup
from mpp.session.payloads import (
    ClosePayload,
    OpenPayload,
    TopUpPayload,
    VoucherPayload,
    parse_payload,
)
from mpp.session.ports import Chain, ChannelState, Mutation, Store
from mpp.session.receipts import NeedVoucher, need_voucher, receipt_fields
from mpp.session.reservations import Reservations
from mpp.session.settlement import SettlementPolicy, Settler
from mpp.session.terms import SessionTerms
from mpp.session.voucher import normalize_signature, recover_voucher_signer

__all__ = ["SessionResult", "SessionServer"]


@dataclass(frozen=True)
class SessionResult:
    """What one session credential did: the resulting state and the receipt to send (SES-32)."""

    action: str
    state: ChannelState
    receipt: dict[str, Any]
    tx_hash: str | None = None
    reserved: int = 0  # charged with the voucher, not delivered yet (see `handle(reserve=)`)


def _canonical(signature: str) -> str:
    """65-byte lowercase hex; called after recovery has validated v and low-s (AMB-07)."""
    return signature if len(signature) == 132 else normalize_signature(signature)


class SessionServer:
    """Server side of the tempo v1 session intent for one escrow / recipient / currency."""

    def __init__(
        self,
        store: Store,
        chain: Chain,
        terms: SessionTerms,
        *,
        fee_payer_key: str | bytes | None = None,
        fee_token: str | None = None,
        now: Callable[[], float] = time.time,
        refresh_ttl: int = 15,
        settlement: SettlementPolicy | None = None,
        reject_lower_vouchers: bool = True,
        min_deposit: int = 0,
        tx_timeout: float = 10.0,
        method: str = "tempo",
    ) -> None:
        if terms.fee_payer and fee_payer_key is None:
            raise ValueError("terms advertise feePayer but no fee_payer_key was given (SES-03)")
        self.store = store
        self.chain = chain
        self.terms = terms
        self.method = method
        self.settlement = SettlementPolicy() if settlement is None else settlement
        self.reject_lower_vouchers = reject_lower_vouchers
        self.tx_timeout = tx_timeout
        self._now = now
        self._holds = Holds()
        self._channels = ChannelLookup(
            store, chain, self._holds, now=self.now, refresh_ttl=refresh_ttl
        )
        self._settler = Settler(
            store, chain, self.settlement, now=self.now, tx_timeout=tx_timeout, holds=self._holds
        )
        self._reservations = Reservations(store, self._holds, now=self.now)
        self._closer = Closer(store, self._settler, self._holds, now=self.now)
        self._funding = Funding(
            chain,
            fee_payer_key=fee_payer_key,
            fee_token=fee_token,
            min_deposit=min_deposit,
            tx_timeout=tx_timeout,
        )

    def now(self) -> int:
        return int(self._now())

    @property
    def refresh_ttl(self) -> int:
        """Seconds a stored channel is served without a chain read (and an unknown id is not
        looked up again)."""
        return self._channels.refresh_ttl

    @refresh_ttl.setter
    def refresh_ttl(self, seconds: int) -> None:
        self._channels.refresh_ttl = seconds

    # --- dispatch -------------------------------------------------------------------------------

    def handle(
        self,
        payload: Mapping[str, Any],
        *,
        challenge_id: str,
        challenge_expires: int | None = None,
        source: str | None = None,
        terms: SessionTerms | None = None,
        reserve: int = 0,
        reserve_partial: bool = False,
    ) -> SessionResult:
        """Process one session credential payload (already HMAC-checked by the HTTP layer).

        `challenge_expires` (unix seconds) bounds an open/topUp tx's `valid_before`; an expired
        challenge → session/challenge-not-found (AMB-05). `source` is informative only.
        `reserve` (vouchers only): also reserve that much of the balance in the same
        transaction (`charge(reserve=True)` semantics; `reserve_partial`: up to that much), so a
        paid request makes one durable write before it is served; `result.reserved` says how
        much was reserved (0: the caller charges on its own).
        """
        terms = terms or self.terms
        p = parse_payload(payload)  # formats before any ECDSA (SES-42)
        if challenge_expires is not None and self.now() > challenge_expires:
            raise ChallengeNotFound("challenge expired")
        if isinstance(p, VoucherPayload):
            state, reserved = self._voucher(p, terms, challenge_id, reserve, reserve_partial)
            receipt = self.receipt(state, challenge_id=challenge_id)
            return SessionResult("voucher", state, receipt, reserved=reserved)
        if isinstance(p, OpenPayload):
            state, tx_hash = self._open(p, terms, challenge_id, challenge_expires)
            return SessionResult(
                "open",
                state,
                self.receipt(state, challenge_id=challenge_id, tx_hash=tx_hash),
                tx_hash,
            )
        if isinstance(p, TopUpPayload):
            state, tx_hash = self._topup(p, terms, challenge_expires)
        else:
            state, tx_hash = self._close(p, terms, challenge_id)
        action = "topUp" if isinstance(p, TopUpPayload) else "close"
        receipt = self.receipt(state, challenge_id=challenge_id, tx_hash=tx_hash)
        return SessionResult(action, state, receipt, tx_hash)

    @staticmethod
    def check_challenge(issuer: ChallengeIssuer, echo: Challenge, *, now: datetime) -> None:
        """CORE-17 binding of an echoed session challenge. The core says `invalid-challenge`
        for an expired one; for sessions it is `session/challenge-not-found` (AMB-05/06)."""
        try:
            issuer.check_binding(echo, now=now)
        except ChallengeExpired:
            raise ChallengeNotFound("challenge expired") from None

    # --- channel state (mpp.session.lookup) -----------------------------------------------------

    def _rules(self, terms: SessionTerms) -> acc.VoucherRules:
        return acc.VoucherRules(terms.min_voucher_delta, self.reject_lower_vouchers)

    def refresh(self, channel_id: str) -> ChannelState:
        """Re-read the channel from chain and merge it (deposit, settled, close request)."""
        return self._channels.refresh(channel_id)

    def serving(self, channel_id: str) -> bool:
        """Whether units may still be delivered on this channel by this process."""
        return not self._holds.frozen(channel_id.lower())

    # --- voucher --------------------------------------------------------------------------------

    def _recover(self, state: ChannelState, terms: SessionTerms, cum: int, sig: str) -> str:
        return recover_voucher_signer(
            state.channel_id,
            cum,
            sig,
            chain_id=state.chain_id,
            escrow=state.escrow,
            name=terms.domain_name,
        )

    def _voucher(
        self,
        p: VoucherPayload,
        terms: SessionTerms,
        challenge_id: str,
        reserve: int = 0,
        partial: bool = False,
    ) -> tuple[ChannelState, int]:
        state = self._channels.get(p.channel_id, terms)
        signer = self._recover(state, terms, p.cumulative_amount, p.signature)
        signature = _canonical(p.signature)
        rules, now = self._rules(terms), self.now()
        reserved = [0]  # what the last run of `decide` reserved (it may run again on a retry)

        def decide(cur: ChannelState | None) -> Mutation:
            mutation = acc.apply_voucher(
                cur,
                cum=p.cumulative_amount,
                signature=signature,
                signer=signer,
                challenge_id=challenge_id,
                now=now,
                rules=rules,
            )
            reserved[0] = 0
            if reserve > 0 and cur is not None:
                mutation, reserved[0] = acc.reserve_after_voucher(
                    mutation, cur, reserve=reserve, partial=partial, now=now
                )
            return mutation

        with self._holds.lock(p.channel_id):  # spent and holds change together
            new = self.store.update(p.channel_id, decide)
            assert new is not None
            self._holds.add(new.channel_id, reserved[0])
        return new, reserved[0]

    # --- open / topUp ---------------------------------------------------------------------------

    def _open(
        self, p: OpenPayload, terms: SessionTerms, challenge_id: str, expires: int | None
    ) -> tuple[ChannelState, str | None]:
        deadline = self._funding.chain_deadline(expires, self.now())
        call, decoded = self._funding.check_open(p, terms, deadline)
        rules = self._rules(terms)
        if self.store.get(p.channel_id) is not None:
            # A retried open (or one another server process stored first): the channel is
            # already funded, so the initial voucher is just a voucher.
            voucher = VoucherPayload(p.channel_id, p.cumulative_amount, p.signature)
            return self._voucher(voucher, terms, challenge_id)[0], None
        fresh = self._funding.expected_state(call, terms, now=self.now())
        signer = self._recover(fresh, terms, p.cumulative_amount, p.signature)
        signature = _canonical(p.signature)

        def decide(cur: ChannelState | None, base: ChannelState) -> Mutation:
            return acc.apply_open(
                cur,
                base,
                cum=p.cumulative_amount,
                signature=signature,
                signer=signer,
                challenge_id=challenge_id,
                now=self.now(),
                rules=rules,
            )

        decide(None, fresh)  # dry run: refuse a bad initial voucher before paying gas
        onchain, tx_hash = self._funding.broadcast_open(terms, call, decoded)
        base = acc.state_from_chain(
            onchain, escrow=terms.escrow_contract, chain_id=terms.chain_id, now=self.now()
        )
        new = self.store.update(p.channel_id, lambda cur: decide(cur, base))
        assert new is not None
        return new, tx_hash

    def _topup(
        self, p: TopUpPayload, terms: SessionTerms, expires: int | None
    ) -> tuple[ChannelState, str]:
        state = self._channels.get(p.channel_id, terms)
        if state.finalized:
            raise ChannelFinalized("channel is finalized")
        deadline = self._funding.chain_deadline(expires, self.now())
        onchain, tx_hash = self._funding.topup(p, state, terms, deadline)
        now = self.now()
        new = self.store.update(p.channel_id, lambda cur: acc.apply_refresh(cur, onchain, now=now))
        assert new is not None
        return new, tx_hash

    # --- per-request charging (SES-27, SES-31; mpp.session.reservations) ------------------------

    def charge(
        self,
        channel_id: str,
        cost: int,
        *,
        challenge_id: str | None = None,
        terms: SessionTerms | None = None,
        reserve: bool = False,
    ) -> ChannelState:
        """Deduct `cost` and persist it before the caller delivers (SES-28).

        Raises InsufficientBalance (with requiredTopUp) when `available < cost`. `challenge_id`
        is accepted for attribution by callers; accounting is per channel (AMB-01).
        `reserve=True` (SES-30): the units are not delivered yet; the caller then `commit()`s
        what it delivers and `release()`s the rest, and receipts leave them out meanwhile.
        """
        state = self._channels.get(channel_id.lower(), terms or self.terms)
        return self._reservations.charge(state.channel_id, cost, reserve=reserve)

    def commit(self, channel_id: str, amount: int, *, force: bool = False) -> bool:
        """Reserved units are delivered now: receipts and settlement count them (no store
        write). False, and nothing delivered, once the channel must not serve (a close in
        flight or requested, SES-21); `force` for units already on their way."""
        return self._holds.commit(channel_id.lower(), amount, force=force)

    def release(
        self, channel_id: str, amount: int, *, challenge_id: str | None = None
    ) -> ChannelState | None:
        """Give back reserved units that were not delivered (accounting.apply_release).

        Only what this process reserved and has not committed can be released, so `spent`
        never drops below what was delivered; the rest of `amount` is ignored. `challenge_id`
        is for attribution (logs). Returns the new state (None for an unknown channel).
        """
        return self._reservations.release(channel_id.lower(), amount, challenge_id=challenge_id)

    def held(self, channel_id: str) -> int:
        """Reserved, not yet delivered units of this process on `channel_id`."""
        return self._holds.get(channel_id.lower())

    def need_voucher_event(
        self, state: ChannelState, cost: int, *, terms: SessionTerms | None = None
    ) -> NeedVoucher:
        """SES-31 `payment-need-voucher` data for sending `cost` more (mpp.session.receipts)."""
        delta = (terms or self.terms).min_voucher_delta
        return need_voucher(state, cost, min_voucher_delta=delta)

    def receipt(
        self,
        state: ChannelState,
        *,
        challenge_id: str,
        units: int | None = None,
        cost: int | None = None,
        tx_hash: str | None = None,
    ) -> dict[str, Any]:
        """SES-33 receipt; `spent` is cumulative for the channel, `units` and `cost` this
        request's (AMB-13).

        `spent` leaves out this process's undelivered reservations (SES-30)."""
        spent = state.spent - min(state.spent, self._holds.get(state.channel_id))
        stamp = datetime.fromtimestamp(self._now(), UTC).isoformat(timespec="milliseconds")
        return receipt_fields(
            state,
            method=self.method,
            delivered=spent,
            challenge_id=challenge_id,
            timestamp=stamp.replace("+00:00", "Z"),
            units=units,
            cost=cost,
            tx_hash=tx_hash,
        )

    # --- settlement and close (mpp.session.closing) ---------------------------------------------

    def settle(self, channel_id: str) -> str | None:
        """Capture exactly what was delivered on one channel (SES-35/36); the tx hash, or None
        when nothing is due."""
        return self._settler.settle(channel_id.lower())

    def maybe_settle(self) -> dict[str, str]:
        """Run the settlement policy once; {channelId: txHash}. Channels whose payer requested a
        close are closed at once (SES-38: before the grace period ends, whatever the policy),
        idle ones too (SES-44); the others are settled when due."""
        return self._closer.run_policy()

    def close_channel(self, channel_id: str) -> tuple[ChannelState, str]:
        """Close a channel on the server's own initiative (idle channels, the operator),
        capturing exactly what was delivered and refunding the rest."""
        return self._closer.by_server(channel_id.lower())

    def reconcile(self, channel_id: str) -> ChannelState:
        """After a close whose transaction outcome was unknown: take the chain's word."""
        return self._closer.reconcile(channel_id.lower())

    def _close(
        self, p: ClosePayload, terms: SessionTerms, challenge_id: str
    ) -> tuple[ChannelState, str]:
        state = self._channels.get(p.channel_id, terms)
        if state.finalized:
            # A row frozen by an earlier close whose outcome was unknown (RPC outage, dropped
            # tx) would otherwise refuse every retry with 410: take the chain's word first.
            # An RPC that is still down surfaces as ChainUnavailable (503, Retry-After).
            state = self.reconcile(state.channel_id)
        signer = self._recover(state, terms, p.cumulative_amount, p.signature)
        return self._closer.by_payer(
            p.channel_id,
            cum=p.cumulative_amount,
            signature=_canonical(p.signature),
            signer=signer,
            challenge_id=challenge_id,
        )
