#!/usr/bin/env python3
"""Coverage-guided fuzzing of the header parsers with atheris (libFuzzer), the long form of
tests/fuzz/test_fuzz_headers.py.

Contract: parsing peer input raises only `mpp.core.errors.PaymentError` subclasses (the two
documented ValueError helpers excepted); whatever parses re-formats and parses back equal. Any
other exception is a crash that libFuzzer reports with the input that caused it.

    .venv/bin/pip install atheris            # not a default dependency
    .venv/bin/python scripts/fuzz_atheris.py                     # all targets, 60 s each
    .venv/bin/python scripts/fuzz_atheris.py credential -- -max_total_time=600 -jobs=2

Targets: challenge, credential, receipt, accept, payload, all. Arguments after `--` go to
libFuzzer unchanged (e.g. -runs=, -max_total_time=, -dict=, -artifact_prefix=). A seed corpus
from our own codec is written to a temporary directory for each target.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

try:
    import atheris
except ImportError:  # pragma: no cover - optional tool
    sys.exit("atheris is not installed: .venv/bin/pip install atheris")

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(tempfile.gettempdir()) / "mpp-fuzz-artifacts"
sys.path.insert(0, str(ROOT))

with atheris.instrument_imports(include=["mpp"]):
    from mpp.core import (
        Challenge,
        FormatError,
        PaymentError,
        b64url_encode,
        check_content_digest,
        parse_accept_payment,
        parse_challenges,
        parse_credential,
        parse_receipt,
        parse_rfc3339,
        rank_offers,
    )
    from mpp.session.payloads import parse_payload

from tests.fuzz.strategies import (  # noqa: E402  (after the instrumented imports)
    ISSUER,
    NOW,
    SEED_ACCEPT,
    SEED_CHALLENGES,
    SEED_CREDENTIALS,
    SEED_PAYLOADS,
    SEED_RECEIPTS,
    SESSION_REQUEST,
)


def _text(data: bytes) -> str:
    # ASGI gives header values as latin-1 decoded bytes; half the time read UTF-8 instead so
    # non-Latin-1 text reaches the parsers too.
    if data[:1] == b"\x00":
        return data[1:].decode("utf-8", "replace")
    return data.decode("latin-1")


def _has_control(c: Challenge) -> bool:
    return any(
        (ord(ch) < 0x20 and ch != "\t") or ch == "\x7f" for _, v in c.wire_params() for ch in v
    )


def fuzz_challenge(data: bytes) -> None:
    value = _text(data)
    for strict in (True, False):
        try:
            found = parse_challenges(value, strict=strict)
        except PaymentError:
            continue
        for c in found:
            try:
                header = c.to_header()
            except FormatError:
                if not _has_control(c):
                    raise
                continue  # known finding: quoted-strings admit CTLs (see test_fuzz_headers)
            if parse_challenges(header) != [c]:
                raise AssertionError("challenge does not round-trip")
            try:
                ISSUER.check_binding(c, now=NOW)
            except PaymentError:
                pass


def fuzz_credential(data: bytes) -> None:
    # Byte 0 selects: raw header text, or "Payment " + base64url(rest) to reach the JSON layer.
    value = _text(data[1:]) if data[:1] == b"r" else "Payment " + b64url_encode(data)
    try:
        cred = parse_credential(value)
    except PaymentError:
        return
    if parse_credential(cred.to_header()) != cred:
        raise AssertionError("credential does not round-trip")
    try:
        ISSUER.verify(
            cred.challenge, method="tempo", intent="session", request=SESSION_REQUEST, now=NOW
        )
    except PaymentError:
        pass
    try:
        parse_payload(cred.payload)
    except PaymentError:
        pass


def fuzz_receipt(data: bytes) -> None:
    value = _text(data[1:]) if data[:1] == b"r" else b64url_encode(data)
    try:
        r = parse_receipt(value)
    except PaymentError:
        return
    if parse_receipt(r.to_header()) != r:
        raise AssertionError("receipt does not round-trip")


def fuzz_accept(data: bytes) -> None:
    value = _text(data)
    try:
        parse_accept_payment(value)
    except PaymentError:
        pass
    offers = [("tempo", "session"), ("tempo", "charge")]
    if not rank_offers(offers, value, key=lambda o: o):
        raise AssertionError("ranking dropped every offer")
    try:
        parse_rfc3339(value)
    except ValueError:
        pass
    check_content_digest(value, b"{}")


def fuzz_payload(data: bytes) -> None:
    try:
        payload = json.loads(data.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return
    try:
        parse_payload(payload)
    except PaymentError:
        pass


TARGETS: dict[str, tuple[Callable[[bytes], None], list[bytes]]] = {
    "challenge": (fuzz_challenge, [s.encode("utf-8") for s in SEED_CHALLENGES]),
    "credential": (
        fuzz_credential,
        [b"r" + s.encode() for s in SEED_CREDENTIALS]
        + [json.dumps({"challenge": {}, "payload": p}).encode() for p in SEED_PAYLOADS],
    ),
    "receipt": (fuzz_receipt, [b"r" + s.encode() for s in SEED_RECEIPTS]),
    "accept": (fuzz_accept, [s.encode() for s in SEED_ACCEPT]),
    "payload": (fuzz_payload, [json.dumps(p).encode() for p in SEED_PAYLOADS]),
}


def run_one(name: str, libfuzzer_args: list[str]) -> None:
    target, seeds = TARGETS[name]
    with tempfile.TemporaryDirectory(prefix=f"mpp-fuzz-{name}-") as corpus:
        for i, seed in enumerate(seeds):
            (Path(corpus) / f"seed-{i}").write_bytes(seed)
        atheris.Setup([sys.argv[0], *libfuzzer_args, corpus], target)
        atheris.Fuzz()  # exits the process when done (or on a crash)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", nargs="?", default="all", choices=[*TARGETS, "all"])
    parser.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
    args, rest = parser.parse_known_args()
    libfuzzer_args = [a for a in rest if a != "--"]
    if not any(a.startswith(("-max_total_time=", "-runs=")) for a in libfuzzer_args):
        libfuzzer_args.append(f"-max_total_time={args.seconds}")
    if not any(a.startswith("-artifact_prefix=") for a in libfuzzer_args):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)  # crash inputs land here, not in the tree
        libfuzzer_args.append(f"-artifact_prefix={ARTIFACTS}/")
    if args.target != "all":
        run_one(args.target, libfuzzer_args)
        return 0
    # atheris.Fuzz() never returns: run each target in its own process, bounded by a timeout.
    failed = []
    for name in TARGETS:
        print(f"== {name}", flush=True)
        cmd = [sys.executable, __file__, name, "--", *libfuzzer_args]
        try:
            rc = subprocess.run(cmd, check=False, timeout=args.seconds * 2 + 60).returncode
        except subprocess.TimeoutExpired:
            rc = -1
        if rc != 0:
            failed.append(name)
    print("failed: " + ", ".join(failed) if failed else "all targets clean")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
