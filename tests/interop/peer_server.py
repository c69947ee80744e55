"""A peer SDK's server as a child process: configured by one JSON line on stdin (secrets never on
argv), ready when it prints {"ready": true}, stopped through its own handle (also on failure)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def peer_server(argv: Sequence[str], config: dict[str, Any], cwd: Path) -> Iterator[None]:
    proc = subprocess.Popen(
        list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(cwd)
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(config) + "\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline()) == {"ready": True}
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
