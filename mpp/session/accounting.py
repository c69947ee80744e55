"""Pure per-channel decisions, run inside `Store.update` (no I/O, no clock: `now` is passed in).

Each `apply_*` takes the current ChannelState (or None) and returns a Mutation, or raises the
PaymentError the peer must see; raising writes nothing. Signatures are recovered by the caller
*before* the store transaction (pure CPU, keeps the lock short); the recovered signer is re-checked
here against the state read under the lock (SES-12: the signer comes from chain state, never from
the payload).

Rows: SES-12, SES-15/16 (open), SES-18 + AMB-08 (topUp raises only `deposit`), SES-20..24 (voucher
order), SES-21 + AMB-11 (pending close → 410 "close requested"), SES-22 + AMB-03 (equal → no-op,
lower → reject for tempo / no-op for evm), SES-26/27 (available, requiredTopUp), AMB-01 (one
counter per channel, challenge id only recorded), AMB-02/SES-36 (close acceptance), AMB-09.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mpp.core.errors import (
    AmountExceedsDeposit,
    ChannelFinalized,
    ChannelNotFound,
    DeltaTooSmall,
    InsufficientBalance,
    InvalidSignature,
    SignerMismatch,
    VerificationFailed,
)
from mpp.session.ports import ChannelState, Mutation, OnChainChannel, VoucherRecord

__all__ = [
    "ZERO_ADDRESS",
    "VoucherRules",
    "apply_charge",
    "apply_close",
    "apply_close_abort",
    "apply_closed",
    "apply_open",
    "apply_refresh",
    "apply_release",
    "apply_settled",
    "apply_voucher",
    "check_open_channel",
    "state_from_chain",
]

ZERO_ADDRESS = "0x" + "00" * 20


@dataclass(frozen=True)
class VoucherRules:
    """Per-route / per-method voucher rules."""

    min_voucher_delta: int = 0  # SES-23
    reject_lower: bool = True  # tempo: a lower voucher is rejected; evm: 200 no-op (AMB-03)


def state_from_chain(
    onchain: OnChainChannel, *, escrow: str, chain_id: int, now: int
) -> ChannelState:
    """A fresh accounting row for a channel read from chain: nothing accepted beyond `settled`."""
    return ChannelState(
        channel_id=onchain.channel_id.lower(),
        escrow=escrow.lower(),
        chain_id=chain_id,
        payer=onchain.payer.lower(),
        payee=onchain.payee.lower(),
        token=onchain.token.lower(),
        authorized_signer=onchain.authorized_signer.lower(),
        deposit=onchain.deposit,
        settled=onchain.settled,
        accepted_cumulative=onchain.settled,
        spent=onchain.settled,
        voucher_signature=None,
        close_requested_at=onchain.close_requested_at,
        finalized=onchain.finalized,
        refreshed_at=now,
        updated_at=now,
    )


def check_open_channel(onchain: OnChainChannel, *, payee: str, token: str, amount: int) -> None:
    """SES-15: the channel exists, pays us in our token, is live and can pay one unit."""
    if onchain.finalized:
        raise ChannelFinalized("channel is finalized")
    if not onchain.exists:
        raise ChannelNotFound("channel does not exist on chain")
    if onchain.payee.lower() != payee.lower():
        raise VerificationFailed("channel payee is not this server's recipient")
    if onchain.token.lower() != token.lower():
        raise VerificationFailed("channel token is not the challenge currency")
    if onchain.close_requested_at != 0:
        raise ChannelFinalized("close requested")
    if onchain.deposit - onchain.settled < amount:
        raise AmountExceedsDeposit("channel deposit cannot cover one unit")


def _require_live(state: ChannelState) -> None:
    if state.finalized:
        raise ChannelFinalized("channel is finalized")
    if state.close_requested_at != 0:
        raise ChannelFinalized("close requested")  # AMB-11


def _require_signer(state: ChannelState, signer: str) -> None:
    """SES-12. A voucher signed by the channel's *other* party (the payer while a delegate is
    set, or the delegate's predecessor) is a signer mismatch; any other recovered address means
    the signature is not over this voucher at all (wrong domain, escrow, chain or amount)."""
    signer = signer.lower()
    if signer == state.expected_signer:
        return
    if signer in (state.payer, state.authorized_signer):
        raise SignerMismatch("voucher is not signed by the channel's authorized signer")
    raise InvalidSignature("voucher signature does not match this channel")


def _accept(state: ChannelState, cum: int, signature: str, challenge_id: str, now: int) -> Mutation:
    new = dataclasses.replace(
        state, accepted_cumulative=cum, voucher_signature=signature, updated_at=now
    )
    row = VoucherRecord(state.channel_id, cum, signature, challenge_id, now)
    return Mutation(new, (row,))


def apply_voucher(
    current: ChannelState | None,
    *,
    cum: int,
    signature: str,
    signer: str,
    challenge_id: str,
    now: int,
    rules: VoucherRules,
) -> Mutation:
    """SES-20 (tempo order after the signature): signer → live → monotonic → delta → cap."""
    if current is None:
        raise ChannelNotFound("unknown channel")
    _require_signer(current, signer)
    _require_live(current)
    highest = current.accepted_cumulative
    if cum == highest:
        return Mutation(None)  # SES-22: idempotent, no state change
    if cum < highest:
        if rules.reject_lower:
            raise VerificationFailed(
                "stale voucher: below the accepted cumulative amount",
                acceptedCumulative=str(highest),
            )
        return Mutation(None)
    if cum - highest < rules.min_voucher_delta:
        raise DeltaTooSmall(
            "voucher increment below minVoucherDelta",
            minVoucherDelta=str(rules.min_voucher_delta),
        )
    if cum > current.deposit:
        raise AmountExceedsDeposit(
            "voucher exceeds the channel deposit", deposit=str(current.deposit)
        )
    return _accept(current, cum, signature, challenge_id, now)


def apply_open(
    current: ChannelState | None,
    fresh: ChannelState,
    *,
    cum: int,
    signature: str,
    signer: str,
    challenge_id: str,
    now: int,
    rules: VoucherRules,
) -> Mutation:
    """SES-16: initialize from chain with the initial voucher; cum ≥ settled (AMB-09).

    If another request (or server process) stored the channel first, the initial voucher is
    treated like any voucher on the existing row.
    """
    if current is not None:
        return apply_voucher(
            current,
            cum=cum,
            signature=signature,
            signer=signer,
            challenge_id=challenge_id,
            now=now,
            rules=rules,
        )
    _require_signer(fresh, signer)
    _require_live(fresh)
    if cum < fresh.settled:
        raise VerificationFailed("initial voucher below the settled amount")
    if cum > fresh.deposit:
        raise AmountExceedsDeposit(
            "initial voucher exceeds the deposit", deposit=str(fresh.deposit)
        )
    base = dataclasses.replace(fresh, accepted_cumulative=fresh.settled, spent=fresh.settled)
    return _accept(base, cum, signature, challenge_id, now)


def reserve_after_voucher(
    voucher: Mutation, current: ChannelState, *, reserve: int, partial: bool, now: int
) -> tuple[Mutation, int]:
    """Fold a reservation into the voucher's own transaction (one durable write, not two).

    `partial`: reserve up to `reserve` (a metered route's headroom); else all or nothing (a
    fixed price: when it does not fit, nothing is reserved and the caller's own charge answers
    insufficient-balance, while the voucher is still kept). Returns (mutation, reserved)."""
    base = voucher.state or current
    amount = min(reserve, base.available) if partial else reserve
    if amount <= 0 or base.available < amount or base.finalized or base.close_requested_at:
        return voucher, 0
    charged = dataclasses.replace(base, spent=base.spent + amount, updated_at=now)
    return Mutation(charged, voucher.vouchers), amount


def apply_charge(current: ChannelState | None, cost: int, *, now: int) -> Mutation:
    """SES-27: deduct `cost` from available, persisted before the service is delivered."""
    if type(cost) is not int or cost < 0:
        raise ValueError("cost must be a non-negative int")
    if current is None:
        raise ChannelNotFound("unknown channel")
    _require_live(current)
    available = current.available
    if available < cost:
        raise InsufficientBalance(
            "channel balance does not cover this request",
            requiredTopUp=str(cost - available),
            acceptedCumulative=str(current.accepted_cumulative),
            spent=str(current.spent),
        )
    if cost == 0:
        return Mutation(None)
    return Mutation(dataclasses.replace(current, spent=current.spent + cost, updated_at=now))


def apply_release(current: ChannelState | None, amount: int, *, now: int) -> Mutation:
    """SES-30: give back charged-but-undelivered units (an unused streaming reservation, or the
    fixed price of a request whose handler failed), so `spent` counts what was delivered.

    The floor is what was delivered, which only the caller knows: it must release only units
    it charged itself and did not send (SessionServer.release enforces that per process).
    There is deliberately no `settled` floor: a row settled by an older version (or another
    payee tool) may hold settled > spent, and clamping at it would bill undelivered units.
    A finalized row is released too: its close captures what was delivered (spent minus holds,
    read together), so the row must keep saying what was delivered.
    """
    if type(amount) is not int or amount < 0:
        raise ValueError("amount must be a non-negative int")
    if current is None:
        raise ChannelNotFound("unknown channel")
    if amount > current.spent:
        raise ValueError("cannot release more than was spent")
    if amount == 0:
        return Mutation(None)
    return Mutation(dataclasses.replace(current, spent=current.spent - amount, updated_at=now))


def apply_refresh(current: ChannelState | None, onchain: OnChainChannel, *, now: int) -> Mutation:
    """Merge a fresh `getChannel` read: deposit (AMB-08), settled, close request, finalized.

    `finalized` is sticky: a row marked finalized by a close in flight stays so until
    `apply_close_abort`. `spent` is not touched. A settle we did not see (settled > accepted)
    raises `accepted` to it; the stored signature no longer matches then, which is harmless
    (the chain needs none up to `settled`).
    """
    if current is None:
        raise ChannelNotFound("unknown channel")
    if not onchain.exists:
        raise ChannelNotFound("channel is no longer on chain")  # SES-43 (reorged open)
    settled = max(current.settled, onchain.settled)
    accepted, signature = current.accepted_cumulative, current.voucher_signature
    if settled > accepted:
        accepted, signature = settled, None
    new = dataclasses.replace(
        current,
        deposit=max(current.deposit, onchain.deposit),
        settled=settled,
        accepted_cumulative=accepted,
        voucher_signature=signature,
        close_requested_at=onchain.close_requested_at,
        finalized=current.finalized or onchain.finalized,
        refreshed_at=now,
    )
    return Mutation(None if new == current else new)


def apply_settled(current: ChannelState | None, amount: int, *, now: int) -> Mutation:
    """Our own settle(amount) succeeded on chain."""
    if current is None:
        raise ChannelNotFound("unknown channel")
    if amount <= current.settled:
        return Mutation(None)
    return Mutation(dataclasses.replace(current, settled=amount, updated_at=now))


def apply_close(
    current: ChannelState | None,
    *,
    cum: int,
    signature: str,
    signer: str,
    challenge_id: str,
    now: int,
) -> Mutation:
    """Validate a cooperative close and freeze the row (finalized) so no voucher or charge lands
    while the close transaction is in flight (SES-36/37).

    The close voucher is the payer's signed request to end the channel; what is captured does
    not depend on it (mpp.session.settlement.plan_close captures exactly what was delivered).
    So a close BELOW `spent` is accepted too (AMB-02 decided differently here): the TypeScript
    client signs its close from the last receipt it saw and stops reading early, and refusing it
    would leave the channel open with the payee's earnings unsettled. The stored highest voucher
    covers `spent`. Above the accepted voucher or the deposit it is still refused.
    """
    if current is None:
        raise ChannelNotFound("unknown channel")
    _require_signer(current, signer)
    if current.finalized:
        raise ChannelFinalized("channel is finalized")
    # A pending close request does not block a cooperative close (ESC-10).
    if cum > current.deposit:
        raise AmountExceedsDeposit("close amount exceeds the deposit", deposit=str(current.deposit))
    if cum > current.accepted_cumulative:
        raise VerificationFailed(
            "close amount above the accepted cumulative amount",
            acceptedCumulative=str(current.accepted_cumulative),
            spent=str(current.spent),
        )
    row = VoucherRecord(current.channel_id, cum, signature, challenge_id, now)
    return Mutation(dataclasses.replace(current, finalized=True, updated_at=now), (row,))


def apply_closed(current: ChannelState | None, captured: int, *, now: int) -> Mutation:
    """The close transaction succeeded: the channel is terminal, `captured` is settled."""
    if current is None:
        raise ChannelNotFound("unknown channel")
    settled = max(current.settled, captured)
    new = dataclasses.replace(
        current,
        settled=settled,
        accepted_cumulative=max(current.accepted_cumulative, settled),
        finalized=True,
        refreshed_at=now,
        updated_at=now,
    )
    return Mutation(new)


def apply_freeze(current: ChannelState | None, *, now: int) -> Mutation:
    """A payee-initiated close: freeze the row (finalized) so no voucher or charge lands while
    the close transaction is in flight, as `apply_close` does for the payer's close."""
    if current is None:
        raise ChannelNotFound("unknown channel")
    if current.finalized:
        raise ChannelFinalized("channel is finalized")
    return Mutation(dataclasses.replace(current, finalized=True, updated_at=now))


def apply_close_abort(current: ChannelState | None, *, now: int) -> Mutation:
    """The close transaction failed before reaching chain: unfreeze the row."""
    if current is None:
        raise ChannelNotFound("unknown channel")
    return Mutation(dataclasses.replace(current, finalized=False, updated_at=now))
