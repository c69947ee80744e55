"""The `mpp` command. Each subcommand lives in its own module of mpp.cli and exposes
`register(subparsers)`, which adds its parser and sets `handler=<callable(args) -> int>`.

Modules are discovered at start-up, so adding a command never edits this file.
Errors end as one line on stderr and a non-zero exit code, never a traceback unless `--debug`
(or MPP_DEBUG=1). Exit codes (mpp.cli._common): 0 ok, 1 the operation failed, 2 usage or bad
input, 3 chain unreachable or wrong chain, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import traceback
from collections.abc import Sequence

import mpp
import mpp.cli
from mpp.cli._common import EXIT_CHAIN, EXIT_FAILED, CliError
from mpp.core.errors import ChainUnavailable, PaymentError

__all__ = ["build_parser", "main"]

_SKIP = frozenset({"main"})
_EPILOG = (
    "exit codes: 0 ok, 1 the operation failed, 2 usage or bad input, "
    "3 chain unreachable or wrong chain, 130 interrupted"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpp",
        description="Toolkit for MPP payment channels (Payment auth, sessions).",
        epilog=_EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"mpp {mpp.__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
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
    debug = bool(getattr(args, "debug", False)) or os.environ.get("MPP_DEBUG") == "1"
    try:
        return int(handler(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the one place that turns errors into exit codes
        if debug:
            traceback.print_exc()
        # One line; messages never contain keys (CORE-43).
        print(f"mpp: error: {_message(exc)}", file=sys.stderr)
        return _exit_code(exc)


def _message(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, CliError | PaymentError | OSError | ValueError | RuntimeError):
        return text
    return f"internal error ({type(exc).__name__}: {text}); rerun with --debug for details"


def _exit_code(exc: Exception) -> int:
    if isinstance(exc, CliError):
        return exc.code
    if isinstance(exc, ChainUnavailable):
        return EXIT_CHAIN
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
