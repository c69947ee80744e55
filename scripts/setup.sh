#!/usr/bin/env bash
# Set up everything a fresh machine (Python 3.11, Node 20, apt) needs: the Python virtualenv
# with the package and its dev tools, the pinned node tools (anvil, forge, solc), PostgreSQL
# for the store tests, and the peer SDK virtualenv for interop tests. Idempotent and quick when
# nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
stamp() { sha256sum "$@" | sha256sum | cut -c1-16; }

# 1. Python virtualenv for the package (+ dev extra).
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
want="$(stamp pyproject.toml)"
if [ "$(cat .venv/.mpp-stamp 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[dev]'
    echo "$want" > .venv/.mpp-stamp
fi

# 2. Node tools pinned in package-lock.json. The foundry packages' postinstall would download;
#    the platform binaries come as regular npm dependencies, so scripts are not needed.
want="$(stamp package.json package-lock.json)"
if [ ! -d node_modules ] || [ "$(cat node_modules/.mpp-stamp 2>/dev/null)" != "$want" ]; then
    npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
    echo "$want" > node_modules/.mpp-stamp
fi

# 3. PostgreSQL server binaries (the tests start their own throwaway cluster).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
        echo "setup: PostgreSQL is missing; install Debian's 'postgresql' package (needs root)" >&2
    fi
fi

# 4. The official Python SDK as an interop peer, in its own virtualenv (its import name is also
#    `mpp`, so it cannot share ours). Its `tempo` extra (the charge client's signer) pins
#    eth-abi<6, which would downgrade it next to our web3 8 (TOOLCHAIN.md); alone in its own
#    virtualenv it resolves to the same pympp 0.16.
if [ ! -x .peers/pympp/bin/python ] \
    || ! (cd .peers && pympp/bin/python -c "import mpp.methods.tempo.client, pytempo") 2>/dev/null; then
    "$PY" -m venv .peers/pympp
    .peers/pympp/bin/python -m pip install -q 'pympp[tempo]>=0.16,<0.17'
fi
