"""`mpp deploy` against the devnet, and `mpp demo` (its own anvil) end to end: JSON shape and
the money adding up (SES-36: settled == spent, refund == deposit - spent), then the README's
first command as a subprocess with the human summary."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mpp.chain.devnet import DevnetError, find_anvil
from mpp.cli.main import main
from mpp.inference.providers import smollm_available
from tests.cli.conftest import CLI, Env

DEMO_KEYS = {"rpcUrl", "chainId", "escrowContract", "serverUrl", "model", "modelLabel", "payer",
             "payee",
             "channelId", "prompt", "text", "tokens", "unitPrice", "units", "spent", "deposit",
             "settled", "refund", "midStreamVouchers", "transactions", "balances", "fees",
             "elapsedSeconds"}  # fmt: skip


def test_deploy_json_and_human(cli: CLI, env: Env) -> None:
    data = cli("deploy", "--json").json
    assert set(data) == {"escrowContract", "chainId", "deployer", "domainName", "closeGracePeriod"}
    assert data["chainId"] == 31337 and data["closeGracePeriod"] == 900
    assert data["escrowContract"] != env.devnet.escrow
    code = env.devnet.rpc("eth_getCode", [data["escrowContract"], "latest"])
    assert len(code) > 1000
    r = cli("deploy", "--name", "Other Channel")
    assert r.code == 0 and "export MPP_ESCROW=0x" in r.out


def _need_anvil() -> None:
    try:
        find_anvil()
    except DevnetError as exc:
        pytest.skip(str(exc))


def test_demo_json(capsys: pytest.CaptureFixture[str]) -> None:
    _need_anvil()
    started = time.monotonic()
    assert main(["demo", "--json", "--max-tokens", "32"]) == 0
    elapsed = time.monotonic() - started
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    s = json.loads(out[0])
    assert set(s) == DEMO_KEYS
    assert 0 < s["tokens"]["completion"] <= 32 and s["tokens"]["prompt"] > 0
    # The real chat model when it is installed (scripts/setup.sh installs it), and it says so.
    expected = "smollm2-135m-instruct" if smollm_available() else "glassllm-en"
    assert s["model"] == expected and s["modelLabel"] and s["text"].strip()
    assert s["midStreamVouchers"] >= 1
    spent, deposit = int(s["spent"]), int(s["deposit"])
    assert spent == s["units"] * int(s["unitPrice"]) > 0
    assert int(s["settled"]) == spent and int(s["refund"]) == deposit - spent
    b, fees = s["balances"], s["fees"]
    assert int(b["payee"]["after"]) == int(b["payee"]["before"]) + spent - int(fees["payee"])
    assert int(b["payer"]["after"]) == int(b["payer"]["before"]) - spent - int(fees["payer"])
    assert s["transactions"]["open"].startswith("0x") and s["transactions"]["close"]
    assert elapsed < 60
    for url in (s["rpcUrl"], s["serverUrl"]):  # anvil and the server were stopped
        with pytest.raises(OSError):
            urllib.request.urlopen(url, timeout=1)


def test_demo_console_script_human() -> None:
    """The README's first command after setup: `.venv/bin/mpp demo`."""
    _need_anvil()
    mpp = Path(sys.executable).parent / "mpp"
    proc = subprocess.run([str(mpp), "demo"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for label in ("[1/5]", "[5/5]", "Summary", "settled on chain", "refund to payer",
                  "close tx", "payer balance", "signed mid-stream"):  # fmt: skip
        assert label in proc.stdout
