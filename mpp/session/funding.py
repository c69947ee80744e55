"""Open and topUp on the server: check the client's 0x76 transaction, co-sign, broadcast, re-read.

Rows: SES-03 (fee payer co-signature only when advertised), SES-13/14 (open tx checks), SES-15
(channel state after the open), SES-17/18 (topUp: deposit rose by exactly `additionalDeposit`),
SES-42 (minimum deposit against gas griefing when sponsoring).
"""

from __future__ import annotations

from mpp.core.errors import TransactionReverted, VerificationFailed
from mpp.session import accounting as acc
from mpp.session.payloads import OpenPayload, TopUpPayload
from mpp.session.ports import Chain, ChannelState, OnChainChannel
from mpp.session.tempo_tx import (
    DecodedTempoTx,
    OpenCall,
    check_open_tx,
    check_topup_tx,
    cosign_as_fee_payer,
    decode_tempo_tx,
)
from mpp.session.terms import SessionTerms

__all__ = ["Funding"]

_SKEW = 5  # seconds of clock difference between payer and server tolerated at expiry


class Funding:
    """The chain-facing half of open / topUp, shared by every route of a SessionServer."""

    def __init__(
        self,
        chain: Chain,
        *,
        fee_payer_key: str | bytes | None,
        fee_token: str | None,
        min_deposit: int,
        tx_timeout: float,
    ) -> None:
        self.chain = chain
        self._fee_payer_key = fee_payer_key
        self._fee_token = fee_token
        self.min_deposit = min_deposit
        self.tx_timeout = tx_timeout

    def _prepare(self, decoded: DecodedTempoTx, terms: SessionTerms) -> bytes:
        """The bytes to broadcast: co-signed when the client asked for sponsorship."""
        if not decoded.sponsored:
            return decoded.raw
        if not terms.fee_payer or self._fee_payer_key is None:
            raise VerificationFailed("this server does not sponsor fees (feePayer is false)")
        if decoded.fee_payer_signature is not None:
            raise VerificationFailed("transaction is already co-signed by another fee payer")
        return cosign_as_fee_payer(
            decoded, self._fee_payer_key, fee_token=self._fee_token or terms.currency
        )

    def chain_deadline(self, expires: int | None, now: int) -> int | None:
        """The latest `valid_before` a client may sign for a challenge expiring at `expires`
        (server clock): the challenge's remaining lifetime on the CHAIN's clock, which may run
        ahead of ours (docs/development.md); a signed open cannot outlive its challenge."""
        if expires is None:
            return None
        return self.chain.latest_timestamp() + max(0, expires - now) + _SKEW

    def _broadcast(self, raw: bytes) -> str:
        receipt = self.chain.send_raw_transaction(raw, timeout=self.tx_timeout)
        if receipt.status != 1:
            raise TransactionReverted("transaction reverted", txHash=receipt.tx_hash)
        return receipt.tx_hash

    # --- open -----------------------------------------------------------------------------------

    def check_open(
        self, p: OpenPayload, terms: SessionTerms, deadline: int | None
    ) -> tuple[OpenCall, DecodedTempoTx]:
        """SES-14: decode, match the challenge, recompute the id (no broadcast yet).
        `deadline` is `chain_deadline()` of the challenge."""
        decoded = decode_tempo_tx(p.transaction)
        call = check_open_tx(
            decoded,
            escrow=terms.escrow_contract,
            token=terms.currency,
            payee=terms.recipient,
            chain_id=terms.chain_id,
            max_valid_before=deadline,
        )
        if call.channel_id != p.channel_id:
            raise VerificationFailed("channelId does not match the open transaction")
        if call.deposit < max(self.min_deposit, terms.amount):
            raise VerificationFailed("deposit below this server's minimum")
        return call, decoded

    @staticmethod
    def expected_state(call: OpenCall, terms: SessionTerms, *, now: int) -> ChannelState:
        """The row the open will create if it succeeds (used to pre-check the first voucher)."""
        onchain = OnChainChannel(
            channel_id=call.channel_id,
            finalized=False,
            close_requested_at=0,
            payer=call.payer,
            payee=call.payee,
            token=call.token,
            authorized_signer=call.authorized_signer,
            deposit=call.deposit,
            settled=0,
        )
        return acc.state_from_chain(
            onchain, escrow=terms.escrow_contract, chain_id=terms.chain_id, now=now
        )

    def broadcast_open(
        self, terms: SessionTerms, call: OpenCall, decoded: DecodedTempoTx
    ) -> tuple[OnChainChannel, str | None]:
        """Co-sign if sponsored, broadcast, then check the channel as the chain has it (SES-15).

        A retried open whose transaction already landed (the server died after broadcasting,
        before storing the channel) is refused by the node as a replay; the channel the
        transaction created is then taken as it is on chain (tx hash None)."""
        raw = self._prepare(decoded, terms)
        try:
            tx_hash: str | None = self._broadcast(raw)
        except TransactionReverted:
            if not self._landed(terms, call):
                raise
            tx_hash = None
        onchain = self.chain.read_channel(terms.escrow_contract, call.channel_id)
        acc.check_open_channel(
            onchain, payee=terms.recipient, token=terms.currency, amount=terms.amount
        )
        if (
            onchain.payer.lower() != call.payer
            or onchain.authorized_signer.lower() != call.authorized_signer
        ):
            raise VerificationFailed("on-chain channel does not match the open transaction")
        return onchain, tx_hash

    def _landed(self, terms: SessionTerms, call: OpenCall) -> bool:
        onchain = self.chain.read_channel(terms.escrow_contract, call.channel_id)
        return onchain.exists and not onchain.finalized and onchain.payer.lower() == call.payer

    # --- topUp ----------------------------------------------------------------------------------

    def topup(
        self, p: TopUpPayload, state: ChannelState, terms: SessionTerms, deadline: int | None
    ) -> tuple[OnChainChannel, str]:
        """SES-18: the tx tops up this channel by exactly additionalDeposit; the deposit rose."""
        decoded = decode_tempo_tx(p.transaction)
        call = check_topup_tx(
            decoded,
            escrow=state.escrow,
            token=state.token,
            channel_id=state.channel_id,
            additional_deposit=p.additional_deposit,
            chain_id=state.chain_id,
            max_valid_before=deadline,
        )
        if call.payer != state.payer:
            raise VerificationFailed("topUp is not sent by the channel payer")
        before = self.chain.read_channel(state.escrow, state.channel_id)
        tx_hash = self._broadcast(self._prepare(decoded, terms))
        after = self.chain.read_channel(state.escrow, state.channel_id)
        if after.deposit - before.deposit != p.additional_deposit:
            raise VerificationFailed("deposit did not rise by additionalDeposit")
        return after, tx_hash
