#!/usr/bin/env bash
# The main job, end to end on a fresh machine (CPU, no downloads): install into .venv, fine-tune a tiny
# FiffDepth model on procedural scenes (train/configs/debug.yaml, a few minutes), export it, and estimate depth
# for two example images with the exported checkpoint. Outputs: runs/quickstart/ and fiffdepth_output/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
RUN="${1:-runs/quickstart}"
if [ ! -f "$RUN/export/model_index.json" ]; then
    RESUME=()
    [ -f "$RUN/config.yaml" ] && RESUME=(--resume latest)
    "$PY" train/finetune.py --config train/configs/debug.yaml --output-dir "$RUN" "${RESUME[@]}"
fi
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
"$PY" -m fiffdepth_core predict examples_generated --checkpoint "$RUN/export" --processing-resolution 0 \
    --format npy png16 controlnet color --output-dir fiffdepth_output --overwrite
echo "Depth maps written to $ROOT/fiffdepth_output (checkpoint: $RUN/export)"
