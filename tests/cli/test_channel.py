"""`mpp channel ...` against anvil (Tempo mode), human and --json, with the documented shapes.

SES-35 (settle), SES-36 (payee close captures spent, refunds the rest), SES-38 (request-close,
grace period, withdraw).
"""

from __future__ import annotations

from typing import Any

from mpp.chain.web3chain import PATH_USD
from mpp.session.voucher import sign_voucher
from tests.cli.conftest import CLI, Env

OPEN_KEYS = {"channelId", "txHash", "escrowContract", "chainId", "payer", "payee", "token",
             "deposit", "salt", "fee"}  # fmt: skip
STATUS_KEYS = {"channelId", "escrowContract", "chainId", "finalized", "payer", "payee", "token",
               "authorizedSigner", "deposit", "settled", "refundable", "closeRequestedAt",
               "closeGracePeriod", "withdrawableAt", "store", "local"}  # fmt: skip
RECORD_ROW_KEYS = {"channelId", "escrowContract", "chainId", "payer", "payee", "token", "deposit",
                   "cumulative", "spent", "accepted", "settled", "status", "updatedAt"}  # fmt: skip


def open_channel(cli: CLI, env: Env, deposit: str = "5000") -> dict[str, Any]:
    r = cli("channel", "open", "--payee", env.payee.address, "--deposit", deposit, "--json")
    assert r.code == 0, r.err
    data: dict[str, Any] = r.json
    return data


def voucher(env: Env, cid: str, amount: int) -> str:
    return sign_voucher(
        bytes(env.payer.key),
        cid,
        amount,
        chain_id=env.devnet.chain_id,
        escrow=env.devnet.escrow,
    )


def test_open_status_topup_list_json(cli: CLI, env: Env) -> None:
    opened = open_channel(cli, env)
    assert set(opened) == OPEN_KEYS
    cid = opened["channelId"]
    assert opened["deposit"] == "5000" and opened["token"] == PATH_USD
    assert opened["payee"] == env.payee.address.lower() and int(opened["fee"]) > 0

    status = cli("channel", "status", cid, "--json").json
    assert set(status) == STATUS_KEYS
    assert status["deposit"] == "5000" and status["settled"] == "0"
    assert status["finalized"] is False and status["withdrawableAt"] is None
    assert status["closeGracePeriod"] == 900 and status["store"] is None
    assert status["local"] == {"cumulative": "0", "spent": "0", "accepted": "0", "status": "open"}

    topped = cli("channel", "topup", cid, "0.001usd", "--json").json
    assert set(topped) == {"channelId", "txHash", "added", "deposit", "fee"}
    assert topped["added"] == "1000" and topped["deposit"] == "6000"

    listed = cli("channel", "list", "--json").json
    assert listed["source"] == "records"
    (row,) = listed["channels"]
    assert set(row) == RECORD_ROW_KEYS and row["deposit"] == "6000"


def test_open_status_list_human(cli: CLI, env: Env) -> None:
    r = cli("channel", "open", "--payee", env.payee.address, "--deposit", "0.005usd")
    assert r.code == 0 and r.out.startswith("Opened 0x")
    cid = r.out.split()[1]
    status = cli("channel", "status", cid)
    assert status.code == 0
    assert "Deposit   0.005000 pathUSD" in status.out and "State     open" in status.out
    listed = cli("channel", "list")
    assert "1 channel(s)" in listed.out and "CHANNEL" in listed.out and "5000" in listed.out


def test_settle_then_close_with_explicit_vouchers(cli: CLI, env: Env) -> None:
    cid = open_channel(cli, env)["channelId"]
    settled = cli(
        "channel", "settle", cid, "--amount", "1200", "--signature", voucher(env, cid, 1200),
        "--json",
    ).json  # fmt: skip
    assert set(settled) == {"channelId", "txHash", "settledBefore", "settled", "fee"}
    assert (settled["settledBefore"], settled["settled"]) == ("0", "1200")
    assert settled["txHash"].startswith("0x")

    r = cli("channel", "close", cid, "--amount", "1500", "--signature", voucher(env, cid, 1500))
    assert r.code == 0 and "captured 0.001500 pathUSD" in r.out and "refunded 0.003500" in r.out
    status = cli("channel", "status", cid, "--json").json
    assert status["finalized"] is True and status["settled"] == "1500"
    assert status["refundable"] == "0"


def test_close_without_voucher_refunds_all_but_settled(cli: CLI, env: Env) -> None:
    cid = open_channel(cli, env)["channelId"]
    closed = cli("channel", "close", cid, "--json").json
    assert set(closed) == {"channelId", "txHash", "captured", "refund", "fee"}
    assert (closed["captured"], closed["refund"]) == ("0", "5000")


def test_forced_close_request_grace_withdraw(cli: CLI, env: Env) -> None:
    """SES-38: requestClose, withdraw refused during the grace period, allowed after it."""
    cid = open_channel(cli, env)["channelId"]
    requested = cli("channel", "request-close", cid, "--json").json
    assert set(requested) == {"channelId", "txHash", "closeRequestedAt", "withdrawableAt", "fee"}
    assert requested["withdrawableAt"] - requested["closeRequestedAt"] == 900
    assert cli("channel", "list", "--json").json["channels"][0]["status"] == "closing"

    early = cli("channel", "withdraw", cid)
    assert early.code == 1 and early.error.startswith("grace period not over: withdraw from")

    again = cli("channel", "request-close", cid)
    assert again.code == 1 and "close already requested" in again.error

    env.devnet.increase_time(900)
    human = cli("channel", "withdraw", cid)
    assert human.code == 0 and human.out.startswith("Withdrew 0.005000 pathUSD")
    status = cli("channel", "status", cid, "--json").json
    assert status["finalized"] is True
    assert status["local"]["status"] == "closed"
    assert cli("channel", "withdraw", cid).error.endswith(
        "is already closed: 0.000000 pathUSD went to the payee"
        " and 0.005000 pathUSD back to the payer"
    )
