# Sourced by the scripts: puts the pinned deno first on PATH.
OUTRUN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$OUTRUN_ROOT/.tools/node_modules/.bin:$PATH"
export DENO_NO_UPDATE_CHECK=1
