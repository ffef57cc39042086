#!/usr/bin/env bash
# Create .venv (once) with a CPU torch and this project with its standalone, training and test extras.
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
    # A CPU build of torch; set FIFFDEPTH_TORCH to pick another (e.g. "torch" for the default CUDA build).
    "$PY" -m pip install -q "${FIFFDEPTH_TORCH:-torch==2.13.0}"
    "$PY" -m pip install -q -e "$ROOT[test]"
    touch "$STAMP"
fi
export PY
