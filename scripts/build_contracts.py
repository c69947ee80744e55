"""Compile the escrow and write its committed artifact, or check that the artifact is fresh.

    .venv/bin/python scripts/build_contracts.py           # rewrite mpp/chain/artifacts/*.json
    .venv/bin/python scripts/build_contracts.py --check   # exit 1 if the committed file is stale

The compiler is solc-js 0.8.37 from node_modules, driven through scripts/solc-forge.cjs (the
same stand-in forge uses, docs/development.md). Settings are fixed for a reproducible output:
no metadata hash and no CBOR trailer in the bytecode, sorted keys, indent 2, trailing newline.
evmVersion is cancun: it runs on anvil `--network tempo --hardfork T4`, checked by deploying.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOLC = ROOT / "scripts" / "solc-forge.cjs"
CONTRACT_NAME = "TempoStreamChannel"
SOURCE = ROOT / "contracts" / "src" / f"{CONTRACT_NAME}.sol"
ARTIFACT = ROOT / "mpp" / "chain" / "artifacts" / f"{CONTRACT_NAME}.json"
SOURCE_KEY = f"contracts/src/{CONTRACT_NAME}.sol"

SETTINGS: dict[str, Any] = {
    "evmVersion": "cancun",
    "metadata": {"appendCBOR": False, "bytecodeHash": "none"},
    "optimizer": {"enabled": True, "runs": 200},
}


def compile_escrow() -> dict[str, Any]:
    """Compile the escrow source with the fixed settings and return the artifact dict."""
    source = SOURCE.read_bytes()
    standard_input = {
        "language": "Solidity",
        "sources": {SOURCE_KEY: {"content": source.decode()}},
        "settings": {
            **SETTINGS,
            "outputSelection": {
                SOURCE_KEY: {
                    CONTRACT_NAME: ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]
                }
            },
        },
    }
    output = json.loads(_run_node(str(SOLC), "--standard-json", stdin=json.dumps(standard_input)))
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise RuntimeError("solc failed:\n" + "\n".join(e["formattedMessage"] for e in errors))
    contract = output["contracts"][SOURCE_KEY][CONTRACT_NAME]
    return {
        "contractName": CONTRACT_NAME,
        "abi": contract["abi"],
        "bytecode": "0x" + contract["evm"]["bytecode"]["object"],
        "deployedBytecode": "0x" + contract["evm"]["deployedBytecode"]["object"],
        "compiler": {"solc": _solc_version(), "settings": SETTINGS},
        "sourceSha256": hashlib.sha256(source).hexdigest(),
    }


def render(artifact: dict[str, Any]) -> str:
    """The committed byte form: deterministic for a given artifact."""
    return json.dumps(artifact, indent=2, sort_keys=True) + "\n"


def _solc_version() -> str:
    # "Version: 0.8.37+commit.f401782d.Emscripten.clang" -> "0.8.37"
    last_line = _run_node(str(SOLC), "--version").strip().splitlines()[-1]
    return last_line.split(":", 1)[1].strip().split("+", 1)[0]


def _run_node(*args: str, stdin: str = "") -> str:
    result = subprocess.run(
        ["node", *args], input=stdin, capture_output=True, text=True, cwd=ROOT, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"node {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="fail if the committed artifact is not fresh"
    )
    args = parser.parse_args(argv)

    fresh = render(compile_escrow())
    if args.check:
        committed = ARTIFACT.read_text() if ARTIFACT.exists() else ""
        if committed != fresh:
            print(
                f"{ARTIFACT.relative_to(ROOT)} is stale: run scripts/build_contracts.py",
                file=sys.stderr,
            )
            return 1
        print(f"{ARTIFACT.relative_to(ROOT)} is up to date")
        return 0

    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(fresh)
    size = (len(json.loads(fresh)["deployedBytecode"]) - 2) // 2
    print(f"wrote {ARTIFACT.relative_to(ROOT)} (runtime bytecode {size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
