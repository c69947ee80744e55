"""Shared builders for the session engine tests, and the subprocess worker they start.

Run as a module (`python -m tests.session._workers`, one JSON line of arguments on stdin, so
keys never appear on a command line) it builds a SessionServer on a real store and performs
voucher/charge operations; see `run_ops` and `crash_run`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_hash.auto import keccak

from mpp.session.engine import SessionServer
from mpp.session.ports import ChannelEvent, ChannelState, OnChainChannel, TxReceipt
from mpp.session.terms import SessionTerms
from mpp.session.voucher import sign_voucher

ZERO = "0x" + "00" * 20
ESCROW = "0x" + "ee" * 20
TOKEN = "0x20c0000000000000000000000000000000000000"
CHAIN_ID = 31337
NOW = 1_800_000_000
CID = "0x" + "ab" * 32


def key(name: str) -> str:
    return "0x" + keccak(name.encode()).hex()


def addr(k: str) -> str:
    return str(Account.from_key(k).address).lower()


PAYER_KEY = key("payer")
PAYEE_KEY = key("payee")
DELEGATE_KEY = key("delegate")
PAYER, PAYEE, DELEGATE = addr(PAYER_KEY), addr(PAYEE_KEY), addr(DELEGATE_KEY)


def terms(**kw: Any) -> SessionTerms:
    base: dict[str, Any] = dict(
        amount=25,
        currency=TOKEN,
        recipient=PAYEE,
        escrow_contract=ESCROW,
        chain_id=CHAIN_ID,
        unit_type="llm_token",
        suggested_deposit=1_000_000,
    )
    base.update(kw)
    return SessionTerms(**base)


def state(**kw: Any) -> ChannelState:
    base = ChannelState(
        channel_id=CID,
        escrow=ESCROW,
        chain_id=CHAIN_ID,
        payer=PAYER,
        payee=PAYEE,
        token=TOKEN,
        authorized_signer=ZERO,
        deposit=1_000_000,
        settled=0,
        accepted_cumulative=0,
        spent=0,
        voucher_signature=None,
        refreshed_at=NOW,
        updated_at=NOW,
    )
    return dataclasses.replace(base, **kw)


def voucher(cum: int, *, k: str = PAYER_KEY, cid: str = CID, **domain: Any) -> dict[str, str]:
    opts: dict[str, Any] = {"chain_id": CHAIN_ID, "escrow": ESCROW}
    opts.update(domain)
    sig = sign_voucher(k, cid, cum, **opts)
    return {"action": "voucher", "channelId": cid, "cumulativeAmount": str(cum), "signature": sig}


class NoChain:
    """A Chain that must not be called: proves the voucher path makes no RPC."""

    chain_id = CHAIN_ID

    def read_channel(self, escrow: str, channel_id: str) -> OnChainChannel:
        raise AssertionError("unexpected RPC: read_channel")

    def send_raw_transaction(self, raw: bytes, *, timeout: float = 10.0) -> TxReceipt:
        raise AssertionError("unexpected RPC: send_raw_transaction")

    def send_call(self, to: str, data: bytes, *, timeout: float = 10.0) -> TxReceipt:
        raise AssertionError("unexpected RPC: send_call")

    def latest_timestamp(self) -> int:
        raise AssertionError("unexpected RPC: latest_timestamp")

    def block_number(self) -> int:
        raise AssertionError("unexpected RPC: block_number")

    def channel_events(self, escrow: str, from_block: int, to_block: int) -> list[ChannelEvent]:
        raise AssertionError("unexpected RPC: channel_events")


# --- anvil helpers -------------------------------------------------------------------------------


def token_flows(devnet: Any, tx_hash: str, token: str = TOKEN) -> dict[str, int]:
    """Net pathUSD change per address in one mined tx, from its Transfer logs (incl. fees)."""
    from mpp.chain.escrow import TRANSFER_TOPIC

    receipt = devnet.rpc("eth_getTransactionReceipt", [tx_hash])
    flows: dict[str, int] = {}
    for log in receipt["logs"]:
        topics = [str(t).lower() for t in log["topics"]]
        if str(log["address"]).lower() != token or not topics or topics[0] != TRANSFER_TOPIC:
            continue
        src, dst = "0x" + topics[1][-40:], "0x" + topics[2][-40:]
        amount = int(log["data"], 16)
        flows[src] = flows.get(src, 0) - amount
        flows[dst] = flows.get(dst, 0) + amount
    return flows


def fee_of(devnet: Any, tx_hash: str, who: str) -> int:
    """What `who` paid to the fee manager in this tx (fees are TIP-20 transfers)."""
    from mpp.chain.escrow import TRANSFER_TOPIC
    from mpp.chain.web3chain import FEE_MANAGER

    receipt = devnet.rpc("eth_getTransactionReceipt", [tx_hash])
    paid = 0
    for log in receipt["logs"]:
        topics = [str(t).lower() for t in log["topics"]]
        if not topics or topics[0] != TRANSFER_TOPIC or len(topics) != 3:
            continue
        src, dst = "0x" + topics[1][-40:], "0x" + topics[2][-40:]
        if src == who.lower() and dst == FEE_MANAGER:
            paid += int(log["data"], 16)
        elif src == FEE_MANAGER and dst == who.lower():
            paid -= int(log["data"], 16)
    return paid


@dataclass
class Env:
    """One anvil with the escrow, a funded payer and payee, and builders for both sides."""

    devnet: Any
    payer_key: str
    payee_key: str
    tmp: Path
    clock: list[float] = dataclasses.field(default_factory=lambda: [time.time()])

    def __post_init__(self) -> None:
        # The server's clock starts at the chain's: after evm_revert the devnet's clock is back
        # at the snapshot's time, which lags the wall clock by however long the session ran.
        self.clock[0] = float(self.devnet.chain().latest_timestamp())

    @property
    def payer(self) -> str:
        return addr(self.payer_key)

    @property
    def payee(self) -> str:
        return addr(self.payee_key)

    def terms(self, **kw: Any) -> SessionTerms:
        base: dict[str, Any] = dict(
            amount=25,
            currency=TOKEN,
            recipient=self.payee,
            escrow_contract=self.devnet.escrow,
            chain_id=self.devnet.chain_id,
            suggested_deposit=100_000,
        )
        base.update(kw)
        return SessionTerms(**base)

    def server(self, store: Any = None, **kw: Any) -> SessionServer:
        from mpp.store.memory import MemoryStore

        route = kw.pop("terms", None) or self.terms(fee_payer=kw.get("fee_payer_key") is not None)
        chain = self.devnet.chain(self.payee_key, fee_token=TOKEN)
        opts: dict[str, Any] = {"now": lambda: self.clock[0]}
        opts.update(kw)
        return SessionServer(store if store is not None else MemoryStore(), chain, route, **opts)

    def client(self, name: str = "payer.db", **kw: Any) -> Any:
        from mpp.session.payer import Payer

        return Payer(self.payer_key, records_path=self.tmp / name, chain=self.devnet.chain(), **kw)

    def balance(self, who: str) -> int:
        return int(self.devnet.chain().balance_of(TOKEN, who))

    def expires(self) -> int:
        return int(self.clock[0]) + 300


# --- subprocess worker ----------------------------------------------------------------------------


def _server(dsn: str) -> SessionServer:
    from mpp.store.open import open_store

    return SessionServer(open_store(dsn), NoChain(), terms(), now=lambda: NOW)


def run_ops(dsn: str, worker: int, ops: int, threads: int, step: int, cost: int) -> dict[str, Any]:
    """`ops` voucher+charge operations on `threads` threads, released together by "go" on stdin.

    Each voucher raises the cumulative amount read a moment ago by `step`, so threads and
    processes race to sign the same amount: the loser gets the idempotent no-op (equal) or the
    stale reject (lower), which is the contention the test wants. Every observed state is checked
    against the invariant spent <= acceptedCumulative <= deposit (SES-26).
    """
    from concurrent.futures import ThreadPoolExecutor

    from mpp.core.errors import InsufficientBalance, VerificationFailed

    server = _server(dsn)
    print("ready", flush=True)
    assert sys.stdin.readline().strip() == "go"

    def one(i: int) -> tuple[int, int]:
        charged = violations = 0
        current = server.store.get(CID)
        assert current is not None
        try:
            seen = server.handle(
                voucher(current.accepted_cumulative + step), challenge_id=f"w{worker}-{i}"
            ).state
            if not seen.spent <= seen.accepted_cumulative <= seen.deposit:
                violations += 1
        except VerificationFailed:
            pass  # lost the race to a higher voucher: a stale reject (SES-22)
        try:
            after = server.charge(CID, cost)
            charged += cost
            if not after.spent <= after.accepted_cumulative:
                violations += 1
        except InsufficientBalance:
            pass
        return charged, violations

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(one, range(ops)))
    server.store.close()
    return {
        "worker": worker,
        "charged": sum(r[0] for r in results),
        "violations": sum(r[1] for r in results),
    }


def crash_run(
    dsn: str,
    request: dict[str, Any],
    rpc_url: str,
    channel_id: str,
    payer_key: str,
    charges: int,
    cost: int,
    point: str,
) -> None:
    """Serve `charges` metered units on a real channel, dying by SIGKILL at `point`:

    - "after-persist": the last charge is committed but its unit is never served (SES-28);
    - "after-voucher": a voucher is committed, then the process dies before charging;
    - "none": print one line per served unit until the parent kills us at a random moment.
    A unit counts as served once its line is printed (the parent is the client).
    """
    import signal

    from mpp.chain.web3chain import Web3Chain
    from mpp.store.open import open_store

    server = SessionServer(open_store(dsn), Web3Chain(rpc_url), SessionTerms.from_request(request))
    escrow, chain_id = server.terms.escrow_contract, server.terms.chain_id
    for i in range(charges):
        state = server.store.get(channel_id)
        assert state is not None
        if state.available < cost:
            cum = state.accepted_cumulative + 4 * cost
            payload = voucher(cum, k=payer_key, cid=channel_id, escrow=escrow, chain_id=chain_id)
            server.handle(payload, challenge_id=f"crash-{i}")
            if point == "after-voucher" and i >= charges // 2:
                os.kill(os.getpid(), signal.SIGKILL)
        after = server.charge(channel_id, cost)
        if point == "after-persist" and i == charges - 1:
            os.kill(os.getpid(), signal.SIGKILL)  # persisted, never served
        print(json.dumps({"served": i + 1, "spent": after.spent}), flush=True)
    print("done", flush=True)
    sys.stdin.readline()  # wait for the parent's SIGKILL


def main() -> int:
    args = json.loads(sys.stdin.readline())
    mode = args.pop("mode")
    if mode == "ops":
        print(json.dumps(run_ops(**args)), flush=True)
    elif mode == "crash":
        crash_run(**args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
