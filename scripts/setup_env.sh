#!/usr/bin/env bash
# Create .venv (once) with torch and this project with its standalone, training and test extras.
# Usage: source scripts/setup_env.sh   (sets PY to the venv's python)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FIFFDEPTH_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
STAMP="$VENV/.fiffdepth-installed"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ] || [ "$ROOT/requirements.txt" -nt "$STAMP" ]; then
    "$PY" -m pip install -q --upgrade pip
    # torch 2.13.0 by default (the version CI uses); set FIFFDEPTH_TORCH to pick another requirement, e.g.
    # FIFFDEPTH_TORCH="torch --index-url https://download.pytorch.org/whl/cpu" for a small CPU-only build.
    # shellcheck disable=SC2086  (FIFFDEPTH_TORCH may carry pip options)
    "$PY" -m pip install -q ${FIFFDEPTH_TORCH:-torch==2.13.0}
    "$PY" -m pip install -q -e "$ROOT[test]"
    touch "$STAMP"
fi
export PY
