"""Shared builders for the store tests and their subprocess worker."""

from __future__ import annotations

import dataclasses

from mpp.session.ports import ChannelState, Mutation, VoucherRecord

ZERO = "0x" + "00" * 20
MAX_U128 = (1 << 128) - 1


def channel_id(n: int) -> str:
    return "0x" + f"{n:064x}"


def new_state(cid: str, *, deposit: int = 10**30, **kw: object) -> ChannelState:
    base = ChannelState(
        channel_id=cid,
        escrow="0x" + "ee" * 20,
        chain_id=42431,
        payer="0x" + "aa" * 20,
        payee="0x" + "bb" * 20,
        token="0x" + "cc" * 20,
        authorized_signer=ZERO,
        deposit=deposit,
        settled=0,
        accepted_cumulative=0,
        spent=0,
        voucher_signature=None,
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def create(cid: str, **kw: object) -> Mutation:
    return Mutation(new_state(cid, **kw))


def accept(cur: ChannelState, step: int, challenge: str, at: int = 0) -> Mutation:
    """A voucher-acceptance-like mutation: raise acceptedCumulative, record the voucher."""
    cum = cur.accepted_cumulative + step
    sig = "0x" + f"{cum:0130x}"[-130:]
    state = dataclasses.replace(cur, accepted_cumulative=cum, voucher_signature=sig, updated_at=at)
    return Mutation(state, (VoucherRecord(cur.channel_id, cum, sig, challenge, at),))


def invariant_ok(s: ChannelState) -> bool:
    """ChannelState's invariant as the engine keeps it (SES-26)."""
    return s.settled <= s.spent <= s.accepted_cumulative <= s.deposit
