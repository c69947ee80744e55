"""The `mpp` command. Each subcommand lives in its own module of mpp.cli and exposes
`register(subparsers)`, which adds its parser and sets `handler=<callable(args) -> int>`.

Only the module of the command being run is imported (`COMMANDS` names them with their one-line
help), so `mpp --help` and `mpp --version` start in a fraction of a second instead of loading
web3 and every command's dependencies.
Errors end as one line on stderr and a non-zero exit code, never a traceback unless `--debug`
(or MPP_DEBUG=1). Exit codes (mpp.cli._common): 0 ok, 1 the operation failed, 2 usage or bad
input, 3 chain unreachable or wrong chain, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Final

import mpp

__all__ = ["COMMANDS", "build_parser", "main"]

# name -> one-line help; the module mpp.cli.<name> registers the command's own parser.
COMMANDS: Final = {
    "channel": "open, top up, inspect, settle and close payment channels",
    "chat": "chat with a paid inference server (the paying client)",
    "demo": "run the whole flow on a private devnet and print a summary",
    "deploy": "deploy the escrow contract",
    "devnet": "run a local Tempo devnet (anvil) with the escrow deployed",
    "pay": "send a request and pay its 402 (charge or session)",
    "serve": "run the paid inference server",
}
_EPILOG = (
    "exit codes: 0 ok, 1 the operation failed, 2 usage or bad input, "
    "3 chain unreachable or wrong chain, 130 interrupted"
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; `command`'s module is imported and registers its own arguments, the other
    commands are listed by name and help only."""
    parser = argparse.ArgumentParser(
        prog="mpp",
        description="Toolkit for MPP payment channels (Payment auth, sessions, charges).",
        epilog=_EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"mpp {mpp.__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, summary in COMMANDS.items():
        if name == command:
            importlib.import_module(f"mpp.cli.{name}").register(subparsers)
        else:
            subparsers.add_parser(name, help=summary)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (the first argument that is not an option)."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command(argv))
    try:
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        return 130
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
        message, code = _message(exc), _exit_code(exc)
        print(f"mpp: error: {message}", file=sys.stderr)
        if getattr(args, "json", False) is True:  # --json: the error is a JSON object too
            print(json.dumps({"error": message, "exitCode": code}), flush=True)
        return code


def _message(exc: Exception) -> str:
    from mpp.cli._common import CliError
    from mpp.core.errors import PaymentError

    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, CliError | PaymentError | OSError | ValueError | RuntimeError):
        return text
    return f"internal error ({type(exc).__name__}: {text}); rerun with --debug for details"


def _exit_code(exc: Exception) -> int:
    from mpp.cli._common import EXIT_CHAIN, EXIT_FAILED, CliError
    from mpp.core.errors import ChainUnavailable

    if isinstance(exc, CliError):
        return exc.code
    if isinstance(exc, ChainUnavailable):
        return EXIT_CHAIN
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
