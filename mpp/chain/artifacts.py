"""The committed escrow artifact (ABI + bytecode), loaded from package data, never compiled here."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

ESCROW_ARTIFACT = "TempoStreamChannel.json"


class ArtifactError(RuntimeError):
    """The escrow artifact is missing or malformed."""


@dataclass(frozen=True)
class EscrowArtifact:
    abi: tuple[dict[str, Any], ...]
    bytecode: bytes  # creation code, without constructor arguments
    deployed_bytecode: bytes
    compiler: dict[str, Any]


def _hex(value: Any, what: str) -> bytes:
    # Accept both our flat layout ("0x...") and forge's {"object": "0x..."}.
    if isinstance(value, dict):
        value = value.get("object")
    if not isinstance(value, str):
        raise ArtifactError(f"escrow artifact: {what} is missing")
    try:
        return bytes.fromhex(value[2:] if value.startswith("0x") else value)
    except ValueError:
        raise ArtifactError(f"escrow artifact: {what} is not hex") from None


def parse_artifact(data: dict[str, Any]) -> EscrowArtifact:
    abi = data.get("abi")
    if not isinstance(abi, list):
        raise ArtifactError("escrow artifact: abi is missing")
    compiler = data.get("compiler")
    return EscrowArtifact(
        abi=tuple(abi),
        bytecode=_hex(data.get("bytecode"), "bytecode"),
        deployed_bytecode=_hex(data.get("deployedBytecode", "0x"), "deployedBytecode"),
        compiler=compiler if isinstance(compiler, dict) else {},
    )


@lru_cache(maxsize=4)
def load_escrow_artifact(path: str | None = None) -> EscrowArtifact:
    """Load `mpp/chain/artifacts/TempoStreamChannel.json` (or an explicit file path)."""
    try:
        if path is not None:
            text = Path(path).read_text(encoding="utf-8")
        else:
            ref = resources.files("mpp.chain").joinpath("artifacts", ESCROW_ARTIFACT)
            text = ref.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        raise ArtifactError(
            f"escrow artifact {ESCROW_ARTIFACT} not found "
            "(build it with scripts/build_contracts.py)"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise ArtifactError("escrow artifact is not valid JSON") from None
    if not isinstance(data, dict):
        raise ArtifactError("escrow artifact must be a JSON object")
    return parse_artifact(data)
