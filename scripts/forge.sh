#!/usr/bin/env bash
# Run forge on contracts/ offline with the solc-js compiler (docs/development.md: forge cannot download
# solc; scripts/solc-forge.cjs stands in for it). Usage: bash scripts/forge.sh test [forge args...]
# Works from any cwd and exits with forge's exit code.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
forge="$root/node_modules/@foundry-rs/forge-linux-amd64/bin/forge"
if [ ! -x "$forge" ]; then
    echo "forge.sh: $forge is missing; run scripts/setup.sh" >&2
    exit 127
fi
cd "$root/contracts"
export FOUNDRY_OFFLINE=true
export FOUNDRY_SOLC="$root/scripts/solc-forge.cjs"
exec "$forge" "$@"
