"""Codec benchmark: parse + format of a typical challenge and credential, ours vs pympp.

Both sides run their own timing loop in the same run (pympp in its venv, .peers/pympp, through
tests/interop/pympp_peer.py). Prints a markdown table; ratio = ours / pympp (>= 1.0: we're faster).

    .venv/bin/python scripts/bench_codec.py [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mpp.core import (  # noqa: E402
    ChallengeIssuer,
    Credential,
    content_digest,
    parse_challenge,
    parse_credential,
)

PEER_PYTHON = ROOT / ".peers" / "pympp" / "bin" / "python"
PEER_SCRIPT = ROOT / "tests" / "interop" / "pympp_peer.py"


def typical_headers() -> tuple[str, str]:
    """A tempo/session challenge as our server would send it, and a voucher credential."""
    issuer = ChallengeIssuer("bench-secret-bench-secret-bench-secret!!", realm="api.example.com")
    challenge = issuer.issue(
        method="tempo",
        intent="session",
        request={
            "amount": "25",
            "unitType": "llm_token",
            "suggestedDeposit": "10000000",
            "currency": "0x20c0000000000000000000000000000000000000",
            "recipient": "0x742d35Cc6634C0532925a3b844Bc9e7595f8fE00",
            "methodDetails": {
                "escrowContract": "0x9d136eEa063eDE5418A6BC7bEafF009bBb6CFa70",
                "chainId": 42431,
                "feePayer": True,
            },
        },
        now=datetime(2026, 1, 1, tzinfo=UTC),
        digest=content_digest(b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'),
        description="Chat completion, per token",
    )
    credential = Credential(
        challenge=challenge,
        payload={
            "action": "voucher",
            "channelId": "0x" + "ab" * 32,
            "cumulativeAmount": "1250000",
            "signature": "0x" + "cd" * 65,
        },
        source="did:pkh:eip155:42431:0x742d35Cc6634C0532925a3b844Bc9e7595f8fE00",
    )
    return challenge.to_header(), credential.to_header()


def ops_per_second(fn: Callable[[], object], seconds: float) -> float:
    n, batch = 0, 200
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            fn()
        n += batch
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def ours(challenge_header: str, credential_header: str, seconds: float) -> dict[str, float]:
    return {
        "challenge": ops_per_second(lambda: parse_challenge(challenge_header).to_header(), seconds),
        "credential": ops_per_second(
            lambda: parse_credential(credential_header).to_header(), seconds
        ),
    }


def peer(challenge_header: str, credential_header: str, seconds: float) -> dict[str, float]:
    if not PEER_PYTHON.exists():
        raise SystemExit("pympp peer venv missing: run scripts/setup.sh")
    request = {
        "op": "bench",
        "challenge": challenge_header,
        "credential": credential_header,
        "seconds": seconds,
    }
    proc = subprocess.run(
        [str(PEER_PYTHON), str(PEER_SCRIPT)],
        input=json.dumps(request) + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    answer = json.loads(proc.stdout.splitlines()[0])
    if not answer["ok"]:
        raise SystemExit(f"pympp failed: {answer['error']}")
    return dict(answer["result"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="timing window per case")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (best kept)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    challenge_header, credential_header = typical_headers()
    # Interleave the two sides and keep each side's best round, so noise hits both alike.
    mine = {"challenge": 0.0, "credential": 0.0}
    theirs = dict(mine)
    for _ in range(args.rounds):
        for best, run in ((mine, ours), (theirs, peer)):
            result = run(challenge_header, credential_header, args.seconds)
            for case, value in result.items():
                best[case] = max(best[case], value)
    print(f"challenge: {len(challenge_header)} chars, credential: {len(credential_header)} chars\n")
    print("| case (parse + format) | mpp ops/s | pympp ops/s | ratio |")
    print("|---|---:|---:|---:|")
    for case in ("challenge", "credential"):
        ratio = mine[case] / theirs[case]
        print(f"| {case} | {mine[case]:,.0f} | {theirs[case]:,.0f} | {ratio:.2f} |")
    if args.json:
        cases = {c: {"mpp": v, "pympp": theirs[c], "ratio": v / theirs[c]} for c, v in mine.items()}
        args.json.write_text(json.dumps({"cases": cases}, indent=2))


if __name__ == "__main__":
    main()
