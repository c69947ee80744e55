"""Fixtures: one anvil (Tempo mode) + escrow for the HTTP tests, a snapshot per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mpp.chain.devnet import Devnet
from tests.http.support import Env


@pytest.fixture(scope="session")
def http_devnet() -> Iterator[Devnet]:
    with Devnet.start() as devnet:
        yield devnet


@pytest.fixture
def env(http_devnet: Devnet, tmp_path: Path) -> Iterator[Env]:
    snapshot = http_devnet.snapshot()
    payer, payee = http_devnet.new_accounts(2)
    try:
        yield Env(http_devnet, "0x" + payer.key.hex(), "0x" + payee.key.hex(), tmp_path)
    finally:
        http_devnet.revert(snapshot)
