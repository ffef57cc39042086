#!/usr/bin/env bash
# Run the whole test suite, slow tests included (installs into .venv first if needed); CI runs this.
# Extra arguments go to pytest after ours, so `bash scripts/test.sh -m "not slow"` runs only the fast set.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec "$PY" -m pytest -q -m "slow or not slow" "$@"
