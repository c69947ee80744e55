#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run every check: ruff, mypy, the Solidity tests (forge), and the
# Python test suite. Extra arguments go to pytest. A run that executes no test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "== ruff"; .venv/bin/ruff check mpp tests scripts examples
echo "== ruff format"; .venv/bin/ruff format --check mpp tests scripts examples
echo "== mypy"; .venv/bin/mypy
echo "== forge test"; bash scripts/forge.sh test
echo "== pytest"
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = "5" ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
