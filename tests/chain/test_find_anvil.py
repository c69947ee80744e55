"""Where `mpp devnet`/`mpp demo` find anvil: $MPP_ANVIL, then `anvil` on PATH, then the
repository's pinned npm package; else one line naming the package to install."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpp.chain import devnet
from mpp.chain.devnet import DevnetError, find_anvil


def _fake(path: Path) -> Path:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_mpp_anvil_wins_and_a_bad_one_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = _fake(tmp_path / "my-anvil")
    monkeypatch.setenv("MPP_ANVIL", str(mine))
    assert find_anvil() == mine
    monkeypatch.setenv("MPP_ANVIL", str(tmp_path / "missing"))
    with pytest.raises(DevnetError, match="not an executable"):
        find_anvil()


def test_path_then_node_modules_then_a_one_line_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MPP_ANVIL", raising=False)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    on_path = _fake(bin_dir / "anvil")
    monkeypatch.setenv("PATH", str(bin_dir))
    assert find_anvil() == on_path
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    elsewhere = tmp_path / "pkg" / "mpp" / "chain" / "devnet.py"  # an install without node_modules
    monkeypatch.setattr(devnet, "__file__", str(elsewhere))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DevnetError) as err:
        find_anvil()
    assert "npm install @foundry-rs/anvil@" in str(err.value) and "\n" not in str(err.value)
    package = tmp_path / "node_modules" / "@foundry-rs" / "anvil-linux-arm64" / "bin"
    package.mkdir(parents=True)
    pinned = _fake(package / "anvil")
    assert find_anvil() == pinned


def test_a_busy_port_is_refused_before_anything_starts() -> None:
    import socket

    from mpp.chain.devnet import Devnet

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(DevnetError, match=f"port {port} is already in use"):
            Devnet.start(port=port)
