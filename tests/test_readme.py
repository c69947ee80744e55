"""The README's code is real: each Python block is either a verbatim excerpt of a file in
examples/ (named on its first line; those files run in tests/test_examples.py) or complete on
its own, and then it runs here as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
MARKER = re.compile(r"# (examples/[\w./-]+\.py)\n")


def test_the_readme_has_code() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_each_block_is_an_example_file_or_runs_alone(block: str, tmp_path: Path) -> None:
    marker = MARKER.match(block)
    if marker is not None:
        source = (ROOT / marker.group(1)).read_text()
        assert block[marker.end() :].strip() in source, f"{marker.group(1)} changed"
        return
    script = tmp_path / "snippet.py"
    script.write_text(block)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, block + "\n" + done.stderr[-2000:]
