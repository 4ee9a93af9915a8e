#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine, as root: installs what it needs
# (scripts/setup.sh), runs fmt/lint/type checks, then every test under tests/
# against real FUSE mounts and the namespace test bed, which it takes down after.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
trap 'deno run -A tests/testbed/cli.ts down' EXIT
bash scripts/build-wasm.sh # the tests use what wasm/ builds now, not a stale copy
deno task check
deno test -A tests/ "$@"
