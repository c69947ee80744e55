"""What a charge transaction pays, read from its calls (pull, CHG-07) or from its receipt's logs
(push, CHG-08), and whether that covers the request's transfers. Pure.

Matching is order-free (CHG-06): every required transfer needs its own effect with the same
recipient and amount, and the same memo when the request names one; without one, the primary
transfer must carry the challenge's attribution memo (mpp.charge.attribution, as the official
SDKs and the public conformance suite require). From calls, nothing else
may be in the transaction (local policy: a server that sponsors fees pays for no other work).
From logs, other effects are allowed (a wallet may batch other work), and a `transferWithMemo`
emits both `Transfer` and `TransferWithMemo`: the pair is one effect.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from eth_hash.auto import keccak

from mpp.charge.attribution import bound_to
from mpp.charge.terms import Transfer
from mpp.core.errors import VerificationFailed
from mpp.session.escrow_abi import TempoTxError, decode_transfer
from mpp.session.tempo_tx import TempoCall

__all__ = ["check_effects", "transfers_in_calls", "transfers_in_logs"]

TRANSFER_TOPIC: Final = "0x" + keccak(b"Transfer(address,address,uint256)").hex()
TRANSFER_WITH_MEMO_TOPIC: Final = (
    "0x" + keccak(b"TransferWithMemo(address,address,uint256,bytes32)").hex()
)


def transfers_in_calls(calls: Iterable[TempoCall], currency: str) -> list[Transfer]:
    """Every call must be a `transfer` or `transferWithMemo` on `currency` (CHG-07)."""
    out = []
    for call in calls:
        if call.to != currency or call.value:
            raise VerificationFailed("a call of the transaction is not a transfer of the currency")
        try:
            to, amount, memo = decode_transfer(call.data)
        except TempoTxError:
            raise VerificationFailed("a call of the transaction is not a transfer") from None
        out.append(Transfer(to, amount, memo))
    return out


def transfers_in_logs(logs: Iterable[Mapping[str, object]], currency: str) -> list[Transfer]:
    """The `Transfer`/`TransferWithMemo` effects emitted by `currency` (CHG-08)."""
    plain: list[tuple[str, str, int]] = []
    memos: list[tuple[str, str, int, str]] = []
    for log in logs:
        topics = log.get("topics")
        if str(log.get("address", "")).lower() != currency or not isinstance(topics, list):
            continue
        event = str(topics[0]).lower() if topics else ""
        try:
            amount = int(str(log.get("data", "")), 16)
        except ValueError:
            continue
        if event == TRANSFER_TOPIC and len(topics) == 3:
            plain.append((_address(topics[1]), _address(topics[2]), amount))
        elif event == TRANSFER_WITH_MEMO_TOPIC and len(topics) == 4:
            memos.append((_address(topics[1]), _address(topics[2]), amount, str(topics[3]).lower()))
    out = [Transfer(to, amount, memo) for _, to, amount, memo in memos]
    for sender, to, amount, _ in memos:  # its twin `Transfer` is the same effect
        if (sender, to, amount) in plain:
            plain.remove((sender, to, amount))
    out += [Transfer(to, amount) for _, to, amount in plain]
    return out


def check_effects(required: Sequence[Transfer], found: Sequence[Transfer], *, exact: bool) -> None:
    """VerificationFailed unless `found` covers `required` (and nothing else when `exact`)."""
    left = list(found)
    # Memo-bound transfers first: a plain requirement must not take the effect a memo needs.
    for want in sorted(required, key=lambda t: t.memo is None and t.bound is None):
        match = next((got for got in left if _pays(want, got)), None)
        if match is None:
            memo = f" with memo {want.memo}" if want.memo else ""
            if want.bound is not None:
                memo = " with this challenge's attribution memo"
            what = f"{want.amount} to {want.recipient}{memo}"
            raise VerificationFailed(f"the transaction does not pay {what}")
        left.remove(match)
    if exact and left:
        raise VerificationFailed("the transaction makes transfers the challenge did not ask for")


def _pays(want: Transfer, got: Transfer) -> bool:
    if got.recipient != want.recipient or got.amount != want.amount:
        return False
    if want.memo is not None:
        return got.memo == want.memo
    return want.bound is None or bound_to(got.memo, *want.bound)


def _address(topic: object) -> str:
    return "0x" + str(topic).lower()[-40:]
