"""The committed escrow artifact: fresh (matches a compile of the source) and the v1 ABI.

Selectors and topics are recomputed here from the canonical signatures with keccak and compared
to the v1 values pinned in the tables below (ESC-01..05), so a drift in either one shows.
The exact-capture additions (ESC-16 settleCapture, ESC-17 closeCapture, InvalidCaptureAmount)
are listed apart: the v1 tables stay as they were, and the ABI must be exactly v1 plus them.
"""

from __future__ import annotations

import importlib.util
import json
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from eth_utils.crypto import keccak

from mpp.chain import escrow as esc
from mpp.session import escrow_abi

ROOT = Path(__file__).resolve().parent.parent
ARTIFACT = ROOT / "mpp" / "chain" / "artifacts" / "TempoStreamChannel.json"

CHANNEL_STRUCT = [  # ESC-02: this order, finalized first
    ("finalized", "bool"),
    ("closeRequestedAt", "uint64"),
    ("payer", "address"),
    ("payee", "address"),
    ("token", "address"),
    ("authorizedSigner", "address"),
    ("deposit", "uint128"),
    ("settled", "uint128"),
]

FUNCTION_SELECTORS = {  # ESC-01, ESC-03
    "CLOSE_GRACE_PERIOD()": "0x956c8327",
    "VOUCHER_TYPEHASH()": "0x94739e87",
    "domainSeparator()": "0xf698da25",
    "open(address,address,uint128,bytes32,address)": "0xc79ea485",
    "settle(bytes32,uint128,bytes)": "0x516d3b88",
    "topUp(bytes32,uint256)": "0xb67644b9",
    "close(bytes32,uint128,bytes)": "0x0d65c51d",
    "requestClose(bytes32)": "0x6bf5fe6f",
    "withdraw(bytes32)": "0x8e19899e",
    "getChannel(bytes32)": "0x831c2b82",
    "getChannelsBatch(bytes32[])": "0x19afc7b4",
    "computeChannelId(address,address,address,bytes32,address)": "0x5af3dc68",
    "getVoucherDigest(bytes32,uint128)": "0x862bb199",
}

CAPTURE_FUNCTION_SELECTORS = {  # ESC-16, ESC-17: ours, on top of the v1 ABI
    "settleCapture(bytes32,uint128,uint128,bytes)": "0xd4ce0fdc",
    "closeCapture(bytes32,uint128,uint128,bytes)": "0x909e3e60",
}

# ESC-04: each topic is pinned by its first 8 and last 4 hex digits.
EVENT_TOPICS = {
    "ChannelOpened(bytes32,address,address,address,address,bytes32,uint256)": ("cd6e6036", "5c94"),
    "Settled(bytes32,address,address,uint256,uint256,uint256)": ("e0b97d7c", "9848"),
    "CloseRequested(bytes32,address,address,uint256)": ("f5a36fc0", "bbce"),
    "CloseRequestCancelled(bytes32,address,address)": ("6bbcbc59", "38fe"),
    "TopUp(bytes32,address,address,uint256,uint256)": ("e96f4c65", "343e"),
    "ChannelClosed(bytes32,address,address,uint256,uint256)": ("92ed5fe0", "7b51"),
    "ChannelExpired(bytes32,address,address)": ("954713a7", "25f4"),
}

ERROR_SELECTORS = {  # ESC-05, incl. the hardened InvalidToken and ZeroDeposit
    "ChannelAlreadyExists()": "0x0ec0f149",
    "ChannelNotFound()": "0x1e07dd94",
    "ChannelFinalized()": "0xc9f3b559",
    "InvalidSignature()": "0x8baa579f",
    "AmountExceedsDeposit()": "0xbd0d7138",
    "AmountNotIncreasing()": "0x32d2c1a3",
    "NotPayer()": "0x1435e357",
    "NotPayee()": "0x56cab67b",
    "TransferFailed()": "0x90b8ec18",
    "CloseNotReady()": "0x02b81e29",
    "InvalidPayee()": "0xb387a238",
    "DepositOverflow()": "0x1132981b",
    "InvalidToken()": "0xc1ab6dc1",
    "ZeroDeposit()": "0x56316e87",
}

CAPTURE_ERROR_SELECTORS = {  # ESC-16, ESC-17
    "InvalidCaptureAmount()": "0xe90ab2c0",
}


def _load_build_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_contracts", ROOT / "scripts" / "build_contracts.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def _artifact() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ARTIFACT.read_text())
    return data


def _signature(entry: dict[str, Any]) -> str:
    return f"{entry['name']}({','.join(_canonical_type(i) for i in entry['inputs'])})"


def _canonical_type(param: dict[str, Any]) -> str:
    if param["type"].startswith("tuple"):
        inner = ",".join(_canonical_type(c) for c in param["components"])
        return f"({inner}){param['type'][len('tuple') :]}"
    return str(param["type"])


def _abi_entries(kind: str) -> dict[str, dict[str, Any]]:
    return {_signature(e): e for e in _artifact()["abi"] if e["type"] == kind}


def _selector(signature: str) -> str:
    return "0x" + keccak(text=signature)[:4].hex()


def test_artifact_is_fresh_compile() -> None:
    """The committed JSON is byte-identical to a fresh solc-js compile of the source."""
    build = _load_build_script()
    fresh = build.render(build.compile_escrow())
    assert ARTIFACT.read_text() == fresh, "stale artifact: run scripts/build_contracts.py"


def test_artifact_shape() -> None:
    artifact = _artifact()
    assert artifact["contractName"] == "TempoStreamChannel"
    assert artifact["compiler"]["solc"] == "0.8.37"
    assert artifact["compiler"]["settings"]["metadata"]["bytecodeHash"] == "none"
    assert artifact["bytecode"].startswith("0x") and artifact["deployedBytecode"].startswith("0x")
    # Runtime size stays well under the EIP-170 limit (and near the ~6 KB target).
    assert len(bytes.fromhex(artifact["deployedBytecode"][2:])) < 6500


def test_esc01_esc03_function_selectors() -> None:
    functions = _abi_entries("function")
    for signature, selector in FUNCTION_SELECTORS.items():
        assert signature in functions, f"missing function {signature}"
        assert _selector(signature) == selector, signature
    # The spec text's topUp(bytes32,uint128) (0x9f6f687a) must not be what we expose.
    assert "topUp(bytes32,uint128)" not in functions
    assert "eip712Domain()" in functions  # ERC-5267
    assert "channels(bytes32)" in functions


def test_esc16_esc17_capture_function_selectors() -> None:
    functions = _abi_entries("function")
    for signature, selector in CAPTURE_FUNCTION_SELECTORS.items():
        assert signature in functions, f"missing function {signature}"
        assert _selector(signature) == selector, signature
        entry = functions[signature]
        assert [i["name"] for i in entry["inputs"]] == [
            "channelId",
            "cumulativeAmount",
            "captureAmount",
            "signature",
        ]
        assert entry["outputs"] == [] and entry["stateMutability"] == "nonpayable"
    # No selector clash with the v1 functions, and nothing else was added.
    v1 = set(FUNCTION_SELECTORS.values())
    assert not v1 & set(CAPTURE_FUNCTION_SELECTORS.values())
    assert set(functions) == (
        set(FUNCTION_SELECTORS)
        | set(CAPTURE_FUNCTION_SELECTORS)
        | {"eip712Domain()", "channels(bytes32)"}
    )


def test_esc01_constants_output_types() -> None:
    functions = _abi_entries("function")
    assert [o["type"] for o in functions["CLOSE_GRACE_PERIOD()"]["outputs"]] == ["uint64"]
    assert [o["type"] for o in functions["VOUCHER_TYPEHASH()"]["outputs"]] == ["bytes32"]
    assert [o["type"] for o in functions["eip712Domain()"]["outputs"]] == [
        "bytes1",
        "string",
        "string",
        "uint256",
        "address",
        "bytes32",
        "uint256[]",
    ]


@pytest.mark.parametrize(
    "signature", ["getChannel(bytes32)", "getChannelsBatch(bytes32[])", "channels(bytes32)"]
)
def test_esc02_channel_struct_order(signature: str) -> None:
    outputs = _abi_entries("function")[signature]["outputs"]
    if signature == "channels(bytes32)":  # the public getter returns the members flat
        members = outputs
    else:
        assert len(outputs) == 1
        members = outputs[0]["components"]
    assert [(m["name"], m["type"]) for m in members] == CHANNEL_STRUCT


def test_esc04_event_topics_and_indexing() -> None:
    events = _abi_entries("event")
    for signature, (head, tail) in EVENT_TOPICS.items():
        assert signature in events, f"missing event {signature}"
        topic = keccak(text=signature).hex()
        assert topic.startswith(head) and topic.endswith(tail), signature
        indexed = [i["indexed"] for i in events[signature]["inputs"]]
        assert indexed[:3] == [True, True, True] and not any(indexed[3:]), signature
    assert set(events) == set(EVENT_TOPICS)


def test_esc05_error_selectors() -> None:
    errors = _abi_entries("error")
    for signature, selector in {**ERROR_SELECTORS, **CAPTURE_ERROR_SELECTORS}.items():
        assert signature in errors, f"missing error {signature}"
        assert _selector(signature) == selector, signature
    assert set(errors) == set(ERROR_SELECTORS) | set(CAPTURE_ERROR_SELECTORS)


def test_python_encoders_and_error_names_match_the_artifact() -> None:
    """mpp's selectors for the capture functions and its error table follow the artifact."""
    assert (
        "0x" + escrow_abi.SETTLE_CAPTURE.hex()
        == CAPTURE_FUNCTION_SELECTORS["settleCapture(bytes32,uint128,uint128,bytes)"]
    )
    assert (
        "0x" + escrow_abi.CLOSE_CAPTURE.hex()
        == CAPTURE_FUNCTION_SELECTORS["closeCapture(bytes32,uint128,uint128,bytes)"]
    )
    assert {f"{name}()" for name in esc.ERROR_SELECTORS} == set(_abi_entries("error"))
