"""The Chain port on web3.py + pytempo, plus the payee/payer helpers the CLI and engine use.

Traps handled here (docs/development.md): fees are paid in a USD TIP-20 (`fee_token`), never ETH;
`eth_estimateGas` ignores batched calls, so every transaction carries an explicit gas limit
(only used gas is charged); a stale-nonce 0x76 tx is silently dropped, so waiting for a receipt
is bounded and a missing receipt raises; `max_fee_per_gas = 2 x latest baseFee`.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import rlp
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_hash.auto import keccak
from pytempo import Call
from web3 import Web3

from mpp.chain import escrow as esc
from mpp.chain.artifacts import load_escrow_artifact
from mpp.core import errors
from mpp.session.ports import ChannelEvent, OnChainChannel, TxReceipt
from mpp.session.tempo_tx import (
    ZERO_ADDRESS,
    build_tempo_tx,
    open_calls,
    sign_tempo_tx,
    topup_calls,
)
from mpp.session.voucher import channel_id as derive_channel_id
from mpp.session.voucher import private_key_bytes

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

__all__ = [
    "FEE_MANAGER",
    "PATH_USD",
    "FeePayment",
    "RpcError",
    "TransactionDropped",
    "Web3Chain",
    "fee_paid",
]

FEE_MANAGER: Final = "0xfeec000000000000000000000000000000000000"
PATH_USD: Final = "0x20c0000000000000000000000000000000000000"
CALL_GAS: Final = 2_000_000  # settle ~332 k, close ~343 k on T4
BATCH_GAS: Final = 3_000_000  # approve+open ~1.6 M on T4
DEPLOY_GAS: Final = 25_000_000  # ~12.9 M on T4


class RpcError(errors.ChainUnavailable):
    """The node answered a JSON-RPC error that is not a revert."""

    def __init__(self, message: str, code: int = 0, data: Any = None) -> None:
        super().__init__(message, code=code)
        self.code = code
        self.data = data


class TransactionDropped(errors.TransactionReverted):
    """No receipt within the timeout: the node accepted the tx and silently dropped it."""

    title = "Transaction dropped"


@dataclass(frozen=True)
class FeePayment:
    payer: str
    token: str
    amount: int


def fee_paid(receipt: TxReceipt) -> FeePayment | None:
    """The fee of a mined tx, from its `Transfer(payer -> 0xfeEC...)` log.

    `receipt.feePayer` is wrong for sponsored txs (docs/development.md); the log is not.
    """
    for log in receipt.logs:
        topics = log.get("topics")
        if not isinstance(topics, list) or len(topics) != 3 or topics[0] != esc.TRANSFER_TOPIC:
            continue
        if "0x" + str(topics[2])[-40:] != FEE_MANAGER:
            continue
        data = str(log.get("data", "0x"))
        return FeePayment(
            payer="0x" + str(topics[1])[-40:],
            token=str(log.get("address", "")).lower(),
            amount=int(data, 16) if data != "0x" else 0,
        )
    return None


def _int(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


def _revert_data(error: dict[str, Any]) -> str | None:
    data = error.get("data")
    if isinstance(data, dict):
        data = data.get("data")
    return data if isinstance(data, str) and data.startswith("0x") else None


class Web3Chain:
    """mpp.session.ports.Chain over JSON-RPC, with an optional sending `account`.

    `fee_token` is the TIP-20 token this account pays fees in (None: the fee manager's
    preference for the account, else pathUSD). `timeout` bounds every receipt wait.
    """

    def __init__(
        self,
        rpc_url: str,
        *,
        account: str | bytes | LocalAccount | None = None,
        fee_token: str | None = None,
        timeout: float = 5.0,
        request_timeout: float = 10.0,
        chain_id: int | None = None,
    ) -> None:
        self.rpc_url = rpc_url
        self._w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": request_timeout}))
        self._key: bytes | None = None if account is None else private_key_bytes(account)
        self.address: str | None = (
            None if self._key is None else Account.from_key(self._key).address.lower()
        )
        self.fee_token = fee_token.lower() if fee_token else None
        self.timeout = timeout
        self._lock = threading.Lock()
        self.chain_id: int = chain_id if chain_id is not None else _int(self.rpc("eth_chainId"))

    def __repr__(self) -> str:  # never show the key
        return f"Web3Chain({self.rpc_url!r}, address={self.address!r})"

    # --- JSON-RPC ---------------------------------------------------------------------------

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        """One JSON-RPC call. Connection problems raise ChainUnavailable; reverts are mapped."""
        try:
            response = self._w3.provider.make_request(method, params or [])  # type: ignore[arg-type]
        except OSError as exc:  # requests' ConnectionError / Timeout derive from OSError
            raise errors.ChainUnavailable(
                f"RPC endpoint unreachable ({type(exc).__name__})"
            ) from None
        error = response.get("error")
        if error:
            err = dict(error) if isinstance(error, dict) else {"message": str(error)}
            data = _revert_data(err)
            if data is not None and esc.error_name(data) is not None:
                raise esc.revert_error(data)
            message = str(err.get("message", "RPC error"))
            if data is not None or "revert" in message.lower():
                raise errors.TransactionReverted(f"call reverted: {message}", reason="unknown")
            code = err.get("code", 0)
            raise RpcError(
                f"{method}: {message}", code if isinstance(code, int) else 0, err.get("data")
            )
        return response.get("result")

    def call(self, to: str, data: bytes, *, sender: str | None = None) -> bytes:
        request: dict[str, str] = {"to": to, "data": "0x" + data.hex()}
        if sender is not None:
            request["from"] = sender
        result = self.rpc("eth_call", [request, "latest"])
        return bytes.fromhex(str(result)[2:])

    # --- Chain port -------------------------------------------------------------------------

    def read_channel(self, escrow: str, channel_id: str) -> OnChainChannel:
        return esc.decode_channel(channel_id, self.call(escrow, esc.encode_get_channel(channel_id)))

    def block_number(self) -> int:
        return _int(self.rpc("eth_blockNumber"))

    def channel_events(self, escrow: str, from_block: int, to_block: int) -> list[ChannelEvent]:
        """The escrow's ESC-04 events in [from_block, to_block] (one `eth_getLogs`)."""
        if to_block < from_block:
            return []
        logs = self.rpc(
            "eth_getLogs",
            [
                {
                    "address": escrow,
                    "fromBlock": hex(from_block),
                    "toBlock": hex(to_block),
                    "topics": [list(esc.EVENT_TOPICS.values())],
                }
            ],
        )
        events = []
        for log in logs or ():
            decoded = esc.decode_event(dict(log))
            if decoded is None:
                continue
            events.append(
                ChannelEvent(
                    name=decoded.name,
                    channel_id=decoded.channel_id,
                    block_number=_int(log["blockNumber"]),
                    tx_hash=str(log["transactionHash"]).lower(),
                    log_index=_int(log.get("logIndex", 0)),
                    args=decoded.args,
                )
            )
        events.sort(key=lambda e: (e.block_number, e.log_index))
        return events

    def latest_timestamp(self) -> int:
        """The chain's "now": the pending block's timestamp (what a node checks `valid_before`
        against). On an idle anvil the latest block can be minutes old, and after `evm_revert`
        the chain clock is not the wall clock; fall back to the latest block where a node
        does not serve "pending"."""
        block = self.rpc("eth_getBlockByNumber", ["pending", False])
        if not isinstance(block, dict) or "timestamp" not in block:
            block = self.rpc("eth_getBlockByNumber", ["latest", False])
        return _int(block["timestamp"])

    def base_fee(self) -> int:
        block = self.rpc("eth_getBlockByNumber", ["latest", False])
        return _int(block.get("baseFeePerGas") or "0x0")

    def send_raw_transaction(self, raw: bytes, *, timeout: float | None = None) -> TxReceipt:
        """Broadcast and wait. Returns the receipt (status 0 when reverted); raises
        TransactionDropped when no receipt comes within `timeout`, TransactionReverted when the
        node refuses the transaction outright."""
        return self._to_receipt(self._broadcast(raw, timeout))

    def transaction_receipt(self, tx_hash: str) -> TxReceipt | None:
        """The receipt of a mined transaction; None while it is not (or never was) mined."""
        raw = self.rpc("eth_getTransactionReceipt", [tx_hash])
        return None if raw is None else self._to_receipt(dict(raw))

    def send_call(
        self, to: str, data: bytes, *, timeout: float | None = None, gas_limit: int = CALL_GAS
    ) -> TxReceipt:
        """Send one call from `account` as a 0x76 tx. Simulated first: an escrow revert raises
        its mapped error (SES-40) before any fee is spent."""
        sender = self._require_account()
        self.call(to, data, sender=sender)
        return self.send_calls(
            (Call.create(to=to, data=data),), gas_limit=gas_limit, timeout=timeout
        )

    # --- sending ----------------------------------------------------------------------------

    def send_calls(
        self, calls: tuple[Call, ...], *, gas_limit: int = BATCH_GAS, timeout: float | None = None
    ) -> TxReceipt:
        """Send a batch of calls from `account` (protocol nonce, self-paid in `fee_token`)."""
        return self._to_receipt(self._send_calls_raw(calls, gas_limit, timeout))

    def _send_calls_raw(
        self, calls: tuple[Call, ...], gas_limit: int, timeout: float | None
    ) -> dict[str, Any]:
        sender = self._require_account()
        assert self._key is not None
        with self._lock:  # one nonce at a time for this account
            nonce = _int(self.rpc("eth_getTransactionCount", [sender, "pending"]))
            tx = build_tempo_tx(
                calls,
                chain_id=self.chain_id,
                gas_limit=gas_limit,
                max_fee_per_gas=2 * max(self.base_fee(), 1),
                nonce=nonce,
                fee_token=self.fee_token,
            )
            return self._broadcast(sign_tempo_tx(tx, self._key), timeout)

    def _require_account(self) -> str:
        if self.address is None:
            raise RuntimeError("this Web3Chain has no account to send from")
        return self.address

    def _broadcast(self, raw: bytes, timeout: float | None) -> dict[str, Any]:
        try:
            tx_hash = str(self.rpc("eth_sendRawTransaction", ["0x" + raw.hex()]))
        except RpcError as exc:
            raise errors.TransactionReverted(f"transaction refused by the node: {exc}") from None
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        delay = 0.005
        while True:
            receipt = self.rpc("eth_getTransactionReceipt", [tx_hash])
            if receipt is not None:
                return dict(receipt)
            if time.monotonic() >= deadline:
                raise TransactionDropped("transaction was not mined in time", tx_hash=tx_hash)
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    @staticmethod
    def _to_receipt(raw: dict[str, Any]) -> TxReceipt:
        logs = tuple(
            {
                "address": str(log["address"]).lower(),
                "topics": [str(t).lower() for t in log["topics"]],
                "data": str(log["data"]),
                "logIndex": _int(log.get("logIndex", 0)),
            }
            for log in raw.get("logs", ())
        )
        return TxReceipt(
            tx_hash=str(raw["transactionHash"]),
            status=_int(raw["status"]),
            block_number=_int(raw["blockNumber"]),
            gas_used=_int(raw["gasUsed"]),
            logs=logs,
        )

    def _checked(self, receipt: TxReceipt, what: str) -> TxReceipt:
        if receipt.status != 1:
            raise errors.TransactionReverted(f"{what} reverted", tx_hash=receipt.tx_hash)
        return receipt

    # --- escrow helpers (payee and payer side) ----------------------------------------------

    def deploy_escrow(
        self, name: str = "Tempo Stream Channel", *, gas_limit: int = DEPLOY_GAS
    ) -> str:
        """Deploy the committed escrow artifact with EIP-712 domain `name` (A-3); its address."""
        sender = self._require_account()
        nonce = _int(self.rpc("eth_getTransactionCount", [sender, "pending"]))
        code = load_escrow_artifact().bytecode + abi_encode(["string"], [name])
        raw = self._send_calls_raw((Call.create(to=b"", data=code),), gas_limit, None)
        self._checked(self._to_receipt(raw), "escrow deployment")
        address = raw.get("contractAddress")
        if not address:  # CREATE address from (sender, nonce)
            address = "0x" + keccak(rlp.encode([bytes.fromhex(sender[2:]), nonce]))[12:].hex()
        return str(address).lower()

    def open_channel(
        self,
        escrow: str,
        *,
        token: str,
        payee: str,
        deposit: int,
        salt: str | None = None,
        authorized_signer: str = ZERO_ADDRESS,
    ) -> tuple[str, TxReceipt]:
        """Payer side: approve+open in one 0x76 batch, self-paid. Returns (channel id, receipt)."""
        payer = self._require_account()
        salt = salt or "0x" + os.urandom(32).hex()
        calls = open_calls(
            escrow=escrow,
            token=token,
            payee=payee,
            deposit=deposit,
            salt=salt,
            authorized_signer=authorized_signer,
        )
        receipt = self._checked(self.send_calls(calls), "open")
        cid = derive_channel_id(payer, payee, token, salt, authorized_signer, escrow, self.chain_id)
        return cid, receipt

    def top_up(self, escrow: str, channel_id: str, amount: int, *, token: str) -> TxReceipt:
        calls = topup_calls(
            escrow=escrow, token=token, channel_id=channel_id, additional_deposit=amount
        )
        return self._checked(self.send_calls(calls), "topUp")

    def settle(self, escrow: str, channel_id: str, amount: int, signature: str) -> TxReceipt:
        data = esc.encode_settle(channel_id, amount, signature)
        return self._checked(self.send_call(escrow, data), "settle")

    def close(self, escrow: str, channel_id: str, amount: int, signature: str) -> TxReceipt:
        data = esc.encode_close(channel_id, amount, signature)
        return self._checked(self.send_call(escrow, data), "close")

    def request_close(self, escrow: str, channel_id: str) -> TxReceipt:
        data = esc.encode_request_close(channel_id)
        return self._checked(self.send_call(escrow, data), "requestClose")

    def withdraw(self, escrow: str, channel_id: str) -> TxReceipt:
        data = esc.encode_withdraw(channel_id)
        return self._checked(self.send_call(escrow, data), "withdraw")

    # --- views and tokens -------------------------------------------------------------------

    def compute_channel_id(
        self,
        escrow: str,
        payer: str,
        payee: str,
        token: str,
        salt: str,
        authorized_signer: str = ZERO_ADDRESS,
    ) -> str:
        data = esc.encode_compute_channel_id(payer, payee, token, salt, authorized_signer)
        return "0x" + self.call(escrow, data, sender=payer).hex()

    def voucher_digest(self, escrow: str, channel_id: str, amount: int) -> bytes:
        return self.call(escrow, esc.encode_get_voucher_digest(channel_id, amount))

    def close_grace_period(self, escrow: str) -> int:
        (value,) = abi_decode(["uint64"], self.call(escrow, esc.CLOSE_GRACE_PERIOD))
        return int(value)

    def balance_of(self, token: str, owner: str) -> int:
        (value,) = abi_decode(["uint256"], self.call(token, esc.encode_balance_of(owner)))
        return int(value)

    def transfer(self, token: str, to: str, amount: int) -> TxReceipt:
        data = esc.encode_transfer(to, amount)
        return self._checked(self.send_call(token, data), "transfer")
