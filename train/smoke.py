"""Smoke figures for the training pipeline: does a short debug run learn? (a script, not a test)

    python train/smoke.py [--output-dir runs/smoke] [--set train.max_steps=200 ...]

Runs ``train/configs/debug.yaml`` (tiny model, procedural data, CPU), then scores the untrained base model and
the exported model with the shared predictor on held-out procedural scenes (a seed neither training nor
validation used), least-squares aligned as in evaluation. Prints the loss trend, AbsRel/delta1 before and after,
and the wall time; writes the same as JSON to ``OUTPUT_DIR/smoke.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

if not __package__:  # started as `python train/<script>.py`: see train/script_root.py
    import script_root  # noqa: F401

import numpy as np

from fiffdepth_core.method import PredictConfig
from fiffdepth_core.weights import load_standalone
from train.finetune import main as finetune
from train.validation import build_validation, run_validation

CONFIG = Path(__file__).resolve().parent / "configs" / "debug.yaml"


def score(checkpoint: Path, items) -> dict:
    metrics, _ = run_validation(load_standalone(checkpoint), items, PredictConfig(processing_resolution=0))
    return {k: round(float(metrics[k]), 4) for k in ("abs_rel", "delta1")}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", default="runs/smoke")
    parser.add_argument("--held-out", type=int, default=32, help="held-out procedural scenes to score")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    out = Path(args.output_dir)
    began = time.perf_counter()
    result = finetune(["--config", str(CONFIG), "--output-dir", str(out), "--log-level", "WARNING"]
                      + [f"--set={s}" for s in args.overrides])
    train_seconds = time.perf_counter() - began
    items = build_validation({"type": "procedural", "seed": 31337, "length": args.held_out}, [64, 64],
                             args.held_out)
    losses = result["losses"]
    window = max(1, min(10, len(losses) // 4))
    report = {
        "steps": len(losses),
        "loss_first": round(float(np.mean(losses[:window])), 4),
        "loss_last": round(float(np.mean(losses[-window:])), 4),
        "untrained": score(out / "base_model", items),
        "trained": score(out / "export", items),
        "held_out_scenes": len(items),
        "train_wall_seconds": round(train_seconds, 1),
        "best_validation_step": result["state"].get("best_step"),
    }
    (out / "smoke.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
