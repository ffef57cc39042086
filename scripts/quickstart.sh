#!/usr/bin/env bash
# The main job, end to end on a fresh machine (CPU is enough), in four counted steps: install into .venv, write two
# example scenes to examples_generated/, get a model, and estimate the scenes' depth into fiffdepth_output/.
#  - when the Hugging Face Hub answers: the model is a public catalogue model (lotus-depth-d-v1-1, 1.9 GB, verified;
#    FIFFDEPTH_QUICKSTART_MODEL picks another, `python -m fiffdepth_core models` lists them);
#  - when it does not (no network, HF_HUB_OFFLINE=1): one line says why, and a tiny FiffDepth is fine-tuned on
#    procedural scenes instead (train/configs/debug.yaml, a few minutes; times in docs/training.md).
# Usage: bash scripts/quickstart.sh [RUN_FOLDER]   (the training run's folder, runs/quickstart by default)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
step() { printf '\n[%s/4] %s\n' "$1" "$2"; }
step 1 "Python environment in $ROOT/.venv (the first time: torch and the project's packages, several minutes)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
RUN="${1:-runs/quickstart}"
MODEL="${FIFFDEPTH_QUICKSTART_MODEL:-lotus-depth-d-v1-1}"
OUTPUTS=(--format npy png16 controlnet color --output-dir fiffdepth_output --overwrite)
step 2 "Two generated example scenes into examples_generated/"
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
# Does the hub answer for the model's pinned commit? (one request; none at all with HF_HUB_OFFLINE=1)
if REASON="$("$PY" -m fiffdepth_core.weights.probe "$MODEL" 2>&1)"; then
    step 3 "The Hugging Face Hub answers: the public model $MODEL (downloaded once, verified)"
    step 4 "Depth for the example scenes into fiffdepth_output/"
    "$PY" -m fiffdepth_core predict examples_generated --checkpoint "$MODEL" --processing-resolution 512 "${OUTPUTS[@]}"
    echo "Depth maps from $MODEL written to $ROOT/fiffdepth_output (example scenes: $ROOT/examples_generated)"
    exit 0
fi
echo "No public model: $REASON; training a tiny FiffDepth on procedural scenes instead"
if [ ! -f "$RUN/export/model_index.json" ]; then
    step 3 "Fine-tuning a tiny FiffDepth in $RUN: a stand-in VAE fit, then 200 training steps (a bar each)"
    RESUME=()
    [ -f "$RUN/config.yaml" ] && RESUME=(--resume latest)
    "$PY" train/finetune.py --config train/configs/debug.yaml --output-dir "$RUN" "${RESUME[@]}"
else
    step 3 "Fine-tuning: $RUN/export exists already (delete $RUN to train again)"
fi
step 4 "Depth for the example scenes into fiffdepth_output/"
"$PY" -m fiffdepth_core predict examples_generated --checkpoint "$RUN/export" --processing-resolution 0 "${OUTPUTS[@]}"
echo "Depth maps written to $ROOT/fiffdepth_output (checkpoint: $RUN/export; example scenes: $ROOT/examples_generated)"
