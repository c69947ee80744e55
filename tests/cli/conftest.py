"""`mpp` run in-process against the session devnet (anvil, Tempo mode, T4).

`cli` runs `mpp.cli.main.main(argv)` and returns its exit code and output; every run also checks
that no private key in play appears on stdout or stderr. `env` points the commands at the devnet
through environment variables (MPP_RPC_URL, MPP_ESCROW, MPP_PAYER_KEY, MPP_PAYEE_KEY,
MPP_PAYER_RECORDS) and moves HOME into a temp dir.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from mpp.chain.devnet import DEV_KEY_0, Devnet
from mpp.cli.main import main


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        lines = self.out.strip().splitlines()
        assert len(lines) == 1, f"--json must print exactly one line, got {self.out!r}"
        return json.loads(lines[0])

    @property
    def error(self) -> str:
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, f"an error is one line, got {self.err!r}"
        assert lines[0].startswith("mpp: error: ")
        return lines[0][len("mpp: error: ") :]


@dataclass
class Env:
    devnet: Devnet
    payer: LocalAccount
    payee: LocalAccount
    tmp: Path
    secrets: set[str] = field(default_factory=set)

    @property
    def records(self) -> Path:
        return self.tmp / "payer.db"


CLI = Callable[..., Result]


def _hex(account: LocalAccount) -> str:
    return bytes(account.key).hex()


@pytest.fixture
def env(
    devnet_clean: Devnet,
    payer: LocalAccount,
    payee: LocalAccount,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Env:
    for name in ("MPP_CHAIN_ID", "MPP_STORE", "MPP_CONFIG", "MPP_SERVER_URL", "MPP_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MPP_RPC_URL", devnet_clean.rpc_url)
    monkeypatch.setenv("MPP_ESCROW", devnet_clean.escrow)
    monkeypatch.setenv("MPP_PAYER_KEY", "0x" + _hex(payer))
    monkeypatch.setenv("MPP_PAYEE_KEY", "0x" + _hex(payee))
    monkeypatch.setenv("MPP_DEPLOYER_KEY", DEV_KEY_0)
    monkeypatch.setenv("MPP_PAYER_RECORDS", str(tmp_path / "payer.db"))
    secrets = {_hex(payer), _hex(payee), DEV_KEY_0[2:]}
    return Env(devnet_clean, payer, payee, tmp_path, secrets)


@pytest.fixture
def cli(env: Env, capsys: pytest.CaptureFixture[str]) -> CLI:
    def run(*argv: str) -> Result:
        capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        for secret in env.secrets:  # keys are never printed
            assert secret.lower() not in captured.out.lower()
            assert secret.lower() not in captured.err.lower()
        assert "Traceback" not in captured.err or "--debug" in argv
        return Result(code, captured.out, captured.err)

    return run
