#!/usr/bin/env bash
# The main job, end to end on a fresh machine (CPU, no downloads but packages), in four counted steps: install into
# .venv, fine-tune a tiny FiffDepth model on procedural scenes (train/configs/debug.yaml), write two example scenes
# to examples_generated/, and estimate their depth with the exported checkpoint into fiffdepth_output/.
# Times measured on a 2-core machine are in docs/training.md. Usage: bash scripts/quickstart.sh [RUN_FOLDER]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
step() { printf '\n[%s/4] %s\n' "$1" "$2"; }
step 1 "Python environment in $ROOT/.venv (the first time: torch and the project's packages, several minutes)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
RUN="${1:-runs/quickstart}"
if [ ! -f "$RUN/export/model_index.json" ]; then
    step 2 "Fine-tuning a tiny FiffDepth in $RUN: a stand-in VAE fit, then 200 training steps (a bar each)"
    RESUME=()
    [ -f "$RUN/config.yaml" ] && RESUME=(--resume latest)
    "$PY" train/finetune.py --config train/configs/debug.yaml --output-dir "$RUN" "${RESUME[@]}"
else
    step 2 "Fine-tuning: $RUN/export exists already (delete $RUN to train again)"
fi
step 3 "Two generated example scenes into examples_generated/"
mkdir -p examples_generated
"$PY" - <<'PY'
from pathlib import Path
import numpy as np
from PIL import Image
from train.datasets.procedural import ProceduralDataset
scenes = ProceduralDataset(size=(192, 256), hflip=False, length=2, seed=2024)
for index in range(2):
    rgb, _ = scenes.render(index)
    Image.fromarray((rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(
        Path("examples_generated") / f"scene_{index}.png")
PY
step 4 "Depth for the example scenes into fiffdepth_output/"
"$PY" -m fiffdepth_core predict examples_generated --checkpoint "$RUN/export" --processing-resolution 0 \
    --format npy png16 controlnet color --output-dir fiffdepth_output --overwrite
echo "Depth maps written to $ROOT/fiffdepth_output (checkpoint: $RUN/export; example scenes: $ROOT/examples_generated)"
