"""Flicker of per-frame depth on procedural video with known depth, without and with temporal alignment.

    python benchmarks/flicker.py                                   # perturbed ground truth only (~1 min on a CPU)
    python benchmarks/flicker.py --checkpoint RUN/export/fiffdepth.safetensors   # + a real model's predictions

Clips: a camera moving through the procedural scenes of ``train/datasets/procedural_scene.py`` (forward, sideways
and turning a little every frame), with exact planar depth. Two kinds of per-frame prediction are scored:

* ``perturbed``: each frame's true depth normalised to [0, 1] like the model's output (2nd/98th percentiles,
  clipped), then a random affine per frame (scale 0.6-1.5, shift +-0.2) and Gaussian noise (sigma 0.01): what an
  affine-invariant estimator does, with a known answer;
* ``model``: the predictions of a FiffDepth checkpoint (``--checkpoint``) on the rendered RGB frames, each with a
  random exposure change (gain and gamma within ``--exposure-jitter``, as auto-exposure and grading shift real
  footage from frame to frame), plus the same frames without it (``model, steady exposure``).

Each is scored raw (``off``), after :func:`fiffdepth_core.method.temporal.align_sequence` (``align``) and after alignment
with the temporal filter (``stabilize``), with
:mod:`fiffdepth_core.method.video_metrics`: ONE least-squares alignment per clip, then the temporal change at static points
(mean |change| between consecutive frames where the true depth changes by <= 1 %, relative to depth) and AbsRel.
``gt`` is the ground truth's own change at those points: the floor. Writes ``flicker.json`` and ``flicker.md`` to
``--out`` and prints the table. Not a test: nothing here asserts a figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: reach the repository root
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.append(str(_here.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fiffdepth_core.method import TEMPORAL_MODES, align_sequence, clip_scores, temporal_change  # noqa: E402  # noqa: E402
from train.datasets.procedural_scene import render_path  # noqa: E402

log = logging.getLogger("benchmarks.flicker")
RESULTS = Path(__file__).resolve().parent / "results"


def unit_depth(depth: np.ndarray, far: float) -> np.ndarray:
    """Planar depth -> [0,1] per frame (2/98 % quantiles, clipped), sky as ``far``: an ideal per-frame output."""
    depth = np.where(np.isfinite(depth), depth, far)
    low, high = np.quantile(depth, [0.02, 0.98])
    return np.clip((depth - low) / max(high - low, 1e-6), 0.0, 1.0).astype(np.float32)


def render_clip(scene: int, args) -> tuple[np.ndarray, np.ndarray]:
    """RGB ``[T,3,H,W]`` and planar depth ``[T,H,W]`` (inf = sky) of one camera path."""
    frames = list(render_path(args.height, args.width, scene, args.seed, args.frames, step=args.step,
                              turn=args.turn))
    return np.stack([f[0] for f in frames]), np.stack([f[1] for f in frames])


def perturbed(depth: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    far = float(np.nanmax(np.where(np.isfinite(depth), depth, np.nan))) * 1.5
    out = []
    for frame in depth:
        scale, shift = rng.uniform(0.6, 1.5), rng.uniform(-0.2, 0.2)
        out.append(unit_depth(frame, far) * scale + shift + rng.normal(0.0, noise, frame.shape))
    return np.stack(out).astype(np.float32)


def exposure_jitter(rgb: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """``[T,3,H,W]`` frames, each with its own gain (1 +- amount) and gamma (1 +- amount/2)."""
    out = []
    for frame in rgb:
        gain, gamma = rng.uniform(1 - amount, 1 + amount), rng.uniform(1 - amount / 2, 1 + amount / 2)
        out.append(np.clip(gain * np.power(frame, gamma), 0.0, 1.0))
    return np.stack(out).astype(np.float32)


def model_predictions(backbone, rgb: np.ndarray, resolution: int) -> np.ndarray:
    from fiffdepth_core.method import PredictConfig, predict_depth

    images = torch.from_numpy(rgb)  # [T,3,H,W]
    with torch.inference_mode():
        return predict_depth(backbone, images, PredictConfig(processing_resolution=resolution, batch_size=8)).numpy()


def score(kind: str, raw: np.ndarray, gt: np.ndarray) -> list[dict]:
    rows = []
    for mode in TEMPORAL_MODES:
        pred = raw
        if mode != "off":
            pred = align_sequence(torch.from_numpy(raw), stabilize=mode == "stabilize")[0].numpy()
        rows.append({"kind": kind, "mode": mode, **clip_scores(pred, gt)})
    return rows


def table(rows: list[dict], floor: float) -> str:
    lines = ["| predictions | temporal | temporal change (% of depth) | AbsRel, one alignment per clip (%) |",
             "| --- | --- | ---: | ---: |"]
    for kind in dict.fromkeys(r["kind"] for r in rows):
        for mode in TEMPORAL_MODES:
            picked = [r for r in rows if r["kind"] == kind and r["mode"] == mode]
            change = 100 * np.mean([r["temporal_change"] for r in picked])
            abs_rel = 100 * np.mean([r["abs_rel"] for r in picked])
            lines.append(f"| {kind} | {mode} | {change:.2f} | {abs_rel:.2f} |")
    lines.append(f"| ground truth (floor) | | {100 * floor:.2f} | 0 |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenes", type=int, default=8, help="clips (one procedural scene each)")
    p.add_argument("--frames", type=int, default=24, help="frames per clip")
    p.add_argument("--height", type=int, default=72)
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--step", type=float, default=0.04, help="camera advance per frame, metres")
    p.add_argument("--turn", type=float, default=0.5, help="camera turn per frame, degrees")
    p.add_argument("--noise", type=float, default=0.01, help="Gaussian noise of the perturbed predictions")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--checkpoint", help="a FiffDepth checkpoint: adds its real predictions")
    p.add_argument("--processing-resolution", type=int, default=0, help="for --checkpoint (0 = native size)")
    p.add_argument("--exposure-jitter", type=float, default=0.15, help="per-frame gain/gamma change for the model")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    backbone = None
    if args.checkpoint:
        from fiffdepth_core.weights import load_standalone

        backbone = load_standalone(args.checkpoint, device="cpu", dtype=torch.float32)
    rng = np.random.default_rng(args.seed)
    rows, floors, began = [], [], time.perf_counter()
    for scene in range(args.scenes):
        rgb, gt = render_clip(scene, args)
        floors.append(temporal_change(gt, gt))
        rows += score("perturbed", perturbed(gt, rng, args.noise), gt)
        if backbone is not None:
            jittered = exposure_jitter(rgb, rng, args.exposure_jitter)
            rows += score("model", model_predictions(backbone, jittered, args.processing_resolution), gt)
            rows += score("model, steady exposure", model_predictions(backbone, rgb, args.processing_resolution), gt)
        log.info("clip %d/%d done", scene + 1, args.scenes)
    result = {"args": vars(args), "rows": rows, "gt_floor": float(np.mean(floors)),
              "seconds": round(time.perf_counter() - began, 1)}
    markdown = table(rows, result["gt_floor"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "flicker.json").write_text(json.dumps(result, indent=2))
    (out / "flicker.md").write_text(markdown + "\n")
    print(markdown)
    return result


if __name__ == "__main__":
    main()
