"""The package as users get it: the sdist and the wheel hold what they should, and the wheel,
installed into a fresh virtualenv outside the repository, runs `mpp --version`, `mpp --help`
and the whole `mpp demo` with only `anvil` on PATH (no repository, no node_modules lookup)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from mpp.chain.devnet import DevnetError, find_anvil

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    cmd = [sys.executable, "-m", "build", "--sdist", "--wheel", "--no-isolation", "-o", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "License classifiers are deprecated" not in done.stdout + done.stderr
    return out


def test_sdist_has_the_solidity_sources_and_no_stray_files(dist: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    wanted = {"contracts/src/TempoStreamChannel.sol", "LICENSE", "README.md", "CHANGELOG.md",
              "docs/architecture.md", "mpp/chain/artifacts/TempoStreamChannel.json"}  # fmt: skip
    assert wanted <= names
    stray = [n for n in names if n.split("/")[0] in ("tests", "scripts", ".ci", "node_modules")]
    assert not stray and not [n for n in names if n.endswith((".pyc", ".db"))]


def test_wheel_holds_the_package_data(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        meta = next(whl.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    assert {"mpp/py.typed", "mpp/chain/artifacts/TempoStreamChannel.json"} <= names
    assert not [n for n in names if n.startswith(("tests/", "examples/", "scripts/"))]
    assert "License-Expression: MIT" in meta and "Provides-Extra: model" in meta
    assert "Project-URL: Specification" in meta


def test_wheel_installed_elsewhere_runs_the_demo(dist: Path, tmp_path: Path) -> None:
    try:
        anvil = find_anvil()
    except DevnetError as exc:
        pytest.skip(str(exc))
    (wheel,) = dist.glob("*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # The dependencies come from this virtualenv (no download); the package from the wheel.
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
    subprocess.run([*pip, str(wheel)], check=True, timeout=120)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MPP_", "PYTHON"))}
    env["PATH"] = os.pathsep.join([str(anvil.parent), "/usr/bin", "/bin"])
    env["HOME"] = str(tmp_path)

    def mpp(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(venv / "bin" / "mpp"), *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=180, check=False)  # fmt: skip

    where = subprocess.run([str(python), "-c", "import mpp; print(mpp.__file__)"], cwd=cwd,
                           env=env, capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert where.startswith(str(venv)), where  # the wheel's copy, not the repository's
    version = mpp("--version")
    assert version.returncode == 0 and "0.1.0" in version.stdout
    assert mpp("--help").returncode == 0
    demo = mpp("demo", "--json", "--max-tokens", "16")
    assert demo.returncode == 0, demo.stderr[-2000:]
    summary = json.loads(demo.stdout)
    assert int(summary["settled"]) == int(summary["spent"]) > 0 and summary["text"]
