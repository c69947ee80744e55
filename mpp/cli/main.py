"""The `mpp` command. Each subcommand lives in its own module of mpp.cli and exposes
`register(subparsers)`, which adds its parser and sets `handler=<callable(args) -> int>`.

Modules are discovered at start-up, so adding a command never edits this file.
Errors end as one line on stderr and exit code 1 (usage errors: 2), never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

import mpp
import mpp.cli
from mpp.core.errors import PaymentError

__all__ = ["build_parser", "main"]

_SKIP = frozenset({"main"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpp", description="Toolkit for MPP payment channels (Payment auth, sessions)."
    )
    parser.add_argument("--version", action="version", version=f"mpp {mpp.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(mpp.cli.__path__), key=lambda m: m.name):
        if info.name in _SKIP or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"mpp.cli.{info.name}")
        register = getattr(module, "register", None)
        if callable(register):
            register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(handler(args))
    except KeyboardInterrupt:
        return 130
    except (PaymentError, OSError, ValueError, RuntimeError) as exc:
        # One line, no traceback; messages never contain keys (CORE-43).
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"mpp: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
