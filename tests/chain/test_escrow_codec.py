"""Escrow ABI constants, codecs and the revert mapping, checked against pinned v1 values and the
committed artifact's ABI (ESC-02..05, SES-40). No chain needed."""

from __future__ import annotations

import pytest
from eth_hash.auto import keccak

from mpp.chain import escrow as esc
from mpp.chain.artifacts import ArtifactError, load_escrow_artifact, parse_artifact
from mpp.chain.web3chain import FEE_MANAGER, fee_paid
from mpp.core import errors
from mpp.session import escrow_abi as abi_calls
from mpp.session.ports import TxReceipt


def _abi_signature(item: dict[str, object]) -> str:
    def kind(param: dict[str, object]) -> str:
        if str(param["type"]).startswith("tuple"):
            inner = ",".join(kind(c) for c in param["components"])  # type: ignore[attr-defined]
            return f"({inner}){str(param['type'])[5:]}"
        return str(param["type"])

    inputs = item.get("inputs", [])
    return f"{item['name']}({','.join(kind(p) for p in inputs)})"  # type: ignore[attr-defined]


def test_esc_03_function_selectors_match_protocol_and_artifact() -> None:
    expected = {
        "open": "c79ea485", "settle": "516d3b88", "topUp": "b67644b9", "close": "0d65c51d",
        "requestClose": "6bf5fe6f", "withdraw": "8e19899e", "getChannel": "831c2b82",
        "computeChannelId": "5af3dc68", "getVoucherDigest": "862bb199",
    }  # fmt: skip
    abi = {
        item["name"]: keccak(_abi_signature(item).encode())[:4].hex()
        for item in load_escrow_artifact().abi
        if item["type"] == "function"
    }
    for name, selector in expected.items():
        assert abi[name] == selector, name
    assert abi_calls.SETTLE.hex() == expected["settle"]
    assert abi_calls.CLOSE.hex() == expected["close"]
    assert abi_calls.GET_CHANNEL.hex() == expected["getChannel"]
    assert esc.encode_request_close("0x" + "00" * 32)[:4].hex() == expected["requestClose"]
    assert esc.encode_withdraw("0x" + "00" * 32)[:4].hex() == expected["withdraw"]


def test_esc_04_event_topics_match_protocol_and_artifact() -> None:
    prefixes = {
        "ChannelOpened": "0xcd6e6036", "Settled": "0xe0b97d7c", "CloseRequested": "0xf5a36fc0",
        "CloseRequestCancelled": "0x6bbcbc59", "TopUp": "0xe96f4c65",
        "ChannelClosed": "0x92ed5fe0", "ChannelExpired": "0x954713a7",
    }  # fmt: skip
    for name, prefix in prefixes.items():
        assert esc.EVENT_TOPICS[name].startswith(prefix), name
    for item in load_escrow_artifact().abi:
        if item["type"] == "event":
            topic = "0x" + keccak(_abi_signature(item).encode()).hex()
            assert esc.EVENT_TOPICS[item["name"]] == topic
            assert [i["indexed"] for i in item["inputs"]][:3] == [True, True, True]


def test_esc_05_error_selectors_match_protocol_and_artifact() -> None:
    expected = {
        "ChannelAlreadyExists": "0x0ec0f149", "ChannelNotFound": "0x1e07dd94",
        "ChannelFinalized": "0xc9f3b559", "InvalidSignature": "0x8baa579f",
        "AmountExceedsDeposit": "0xbd0d7138", "AmountNotIncreasing": "0x32d2c1a3",
        "NotPayer": "0x1435e357", "NotPayee": "0x56cab67b", "TransferFailed": "0x90b8ec18",
        "CloseNotReady": "0x02b81e29", "InvalidPayee": "0xb387a238",
        "DepositOverflow": "0x1132981b", "InvalidToken": "0xc1ab6dc1", "ZeroDeposit": "0x56316e87",
        "InvalidCaptureAmount": "0xe90ab2c0",  # ESC-16/17, ours
    }  # fmt: skip
    assert esc.ERROR_SELECTORS == expected
    in_abi = {item["name"] for item in load_escrow_artifact().abi if item["type"] == "error"}
    assert in_abi <= set(expected)


@pytest.mark.parametrize(
    ("name", "cls", "status", "problem"),
    [
        ("AmountExceedsDeposit", errors.AmountExceedsDeposit, 402, "amount-exceeds-deposit"),
        ("ChannelNotFound", errors.ChannelNotFound, 410, "channel-not-found"),
        ("ChannelFinalized", errors.ChannelFinalized, 410, "channel-finalized"),
        ("InvalidSignature", errors.InvalidSignature, 402, "invalid-signature"),
        ("AmountNotIncreasing", errors.TransactionReverted, 409, "transaction-reverted"),
        ("CloseNotReady", errors.TransactionReverted, 409, "transaction-reverted"),
        ("NotPayee", errors.TransactionReverted, 409, "transaction-reverted"),
        ("TransferFailed", errors.TransactionReverted, 409, "transaction-reverted"),
    ],
)
def test_ses_40_revert_mapping(name: str, cls: type, status: int, problem: str) -> None:
    err = esc.revert_error(esc.ERROR_SELECTORS[name])
    assert type(err) is cls and err.status == status and err.problem.endswith(problem)
    assert err.extensions["reason"] == name
    assert esc.ERROR_SELECTORS[name] not in err.detail  # never surface raw selectors


def test_ses_40_unknown_revert_is_transaction_reverted() -> None:
    for data in (None, "0x", "0xdeadbeef", b"\x01\x02"):
        err = esc.revert_error(data)
        assert type(err) is errors.TransactionReverted


def test_esc_02_decode_channel_struct_order() -> None:
    words = [1, 1_700_000_000, 0xAA, 0xBB, 0xCC, 0, 10**6, 3]
    data = b"".join(w.to_bytes(32, "big") for w in words)
    ch = esc.decode_channel("0x" + "AB" * 32, data)
    assert ch.finalized and ch.close_requested_at == 1_700_000_000
    assert ch.payer == "0x" + "00" * 19 + "aa" and ch.token == "0x" + "00" * 19 + "cc"
    assert (ch.deposit, ch.settled) == (10**6, 3) and ch.channel_id == "0x" + "ab" * 32
    with pytest.raises(ValueError):
        esc.decode_channel("0x" + "ab" * 32, data[:-1])


def test_fee_paid_reads_the_fee_manager_transfer_log() -> None:
    payer = "0x" + "12" * 20
    other = "0x" + "00" * 12 + "ee" * 20
    logs: tuple[dict[str, object], ...] = (
        {"address": "0x20c0000000000000000000000000000000000000", "data": hex(5),
         "topics": [esc.TRANSFER_TOPIC, "0x" + "00" * 12 + payer[2:], other]},
        {"address": "0x20c0000000000000000000000000000000000001", "data": hex(77),
         "topics": [esc.TRANSFER_TOPIC, "0x" + "00" * 12 + payer[2:],
                    "0x" + "00" * 12 + FEE_MANAGER[2:]]},
    )  # fmt: skip
    paid = fee_paid(TxReceipt("0x01", 1, 1, 21_000, logs))
    assert paid is not None
    assert (paid.payer, paid.token, paid.amount) == (payer, logs[1]["address"], 77)
    assert fee_paid(TxReceipt("0x01", 1, 1, 21_000, logs[:1])) is None


def test_artifact_loader_refuses_malformed() -> None:
    art = load_escrow_artifact()
    assert art.bytecode and art.deployed_bytecode and art.abi
    with pytest.raises(ArtifactError):
        parse_artifact({"abi": []})
    with pytest.raises(ArtifactError):
        parse_artifact({"abi": [], "bytecode": "0xzz"})
    with pytest.raises(ArtifactError):
        load_escrow_artifact("/nonexistent/escrow.json")
