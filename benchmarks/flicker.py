"""Flicker, accuracy and lag of per-frame video depth on procedural clips with known depth: without temporal
processing, with ``align`` and with ``stabilize``, each with the pictures (as the CLI and the node run them) and
without (the depth alone, as before the pictures were used).

    python benchmarks/flicker.py                                  # perturbed ground truth only (a few minutes)
    python benchmarks/flicker.py --checkpoint RUN/best --processing-resolution 64   # + a trained model
    python benchmarks/flicker.py --random-model                   # + the random tiny test model
    python benchmarks/flicker.py --flow-cost                      # per-frame cost of the pictures' share at 720p

Clips, rendered by ``train/datasets/procedural_scene.py`` (exact planar depth; every clip is one shot):

* ``camera``: a camera moving through a scene (each frame ``--step`` forward, half that sideways, ``--turn``);
* ``object``: a still camera and a ball crossing the view at ``--mover`` metres per frame;
* ``pumping``: a still camera whose exposure pumps: gain ``1 + --pump * sin(2 pi k / 5)`` (auto-exposure hunting, a
  flickering light);
* ``step``: a still camera; a ball appears half way through. Its ``lag`` is how many frames the new surface's mean
  depth needs to come within 10 % of the step from where it settles.

Predictions: ``perturbed`` (each frame's true depth normalised like a model's output, then a random affine and
Gaussian noise: a known answer), ``model`` (a checkpoint's predictions; on the camera clips each frame also gets a
random exposure change, ``--exposure-jitter``) and ``random`` (the seeded random tiny model the tests use: an
unsteady model). The models predict ``align`` and ``stabilize`` from the steadied pictures
(:func:`fiffdepth_core.method.steady_clip`: exposure levelled, still areas denoised), as the CLI and the node do, and
the other rows from the pictures as rendered. Scores (:mod:`fiffdepth_core.method.video_metrics`, one least-squares
alignment per clip): temporal change at static points (``flicker``; the ground truth's own change there is the
floor), AbsRel, and the scene cuts
found (all false: every clip is one shot). Writes ``flicker.json`` and ``flicker.md`` to ``--out``. Not a test:
nothing here asserts a figure.
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

from fiffdepth_core.method import (align_sequence, clip_scores, steady_clip, steady_frames,  # noqa: E402
                                   temporal_change)
from fiffdepth_core.method.video_metrics import align_clip  # noqa: E402
from train.datasets.procedural_scene import render_path  # noqa: E402

log = logging.getLogger("benchmarks.flicker")
RESULTS = Path(__file__).resolve().parent / "results"
# name -> (temporal mode, with the pictures)
MODES = {"off": (None, False), "align, depth only": ("align", False), "stabilize, depth only": ("stabilize", False),
         "align": ("align", True), "stabilize": ("stabilize", True)}


def unit_depth(depth: np.ndarray, far: float) -> np.ndarray:
    """Planar depth -> [0,1] per frame (2/98 % quantiles, clipped), sky as ``far``: an ideal per-frame output."""
    depth = np.where(np.isfinite(depth), depth, far)
    low, high = np.quantile(depth, [0.02, 0.98])
    return np.clip((depth - low) / max(high - low, 1e-6), 0.0, 1.0).astype(np.float32)


def render(scene: int, args, frames: int, step: float = 0.0, turn: float = 0.0, mover: float = 0.0):
    """RGB ``[T,3,H,W]`` and planar depth ``[T,H,W]`` (inf = sky) of one camera path."""
    out = list(render_path(args.height, args.width, scene, args.seed, frames, step=step, turn=turn, mover=mover))
    return np.stack([f[0] for f in out]), np.stack([f[1] for f in out])


def clips(scene: int, args) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The four clips of one scene: name -> (RGB, depth)."""
    camera = render(scene, args, args.frames, args.step, args.turn)
    moving = render(scene, args, args.frames, mover=args.mover)
    still_rgb, still_depth = render(scene, args, args.short)
    gains = 1.0 + args.pump * np.sin(2 * np.pi * np.arange(args.short) / 5)
    pumping = (np.clip(still_rgb * gains[:, None, None, None], 0.0, 1.0).astype(np.float32), still_depth)
    half = args.short // 2
    ball_rgb, ball_depth = render(scene, args, args.short, mover=1e-9)  # the same frames with a ball standing still
    step = (np.concatenate([still_rgb[:half], ball_rgb[half:]]), np.concatenate([still_depth[:half], ball_depth[half:]]))
    return {"camera": camera, "object": moving, "pumping": pumping, "step": step}


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


def predictions(backbone, rgb: np.ndarray, resolution: int) -> np.ndarray:
    from fiffdepth_core.method import PredictConfig, predict_depth

    with torch.inference_mode():
        return predict_depth(backbone, torch.from_numpy(rgb), PredictConfig(processing_resolution=resolution,
                                                                            batch_size=8)).numpy()


def settle(pred: np.ndarray, gt: np.ndarray, start: int) -> int:
    """Frames from ``start`` until the mean depth of the region the step changed comes within 10 % of the step from
    its settled value (the mean over the clip's last third), after one alignment of the clip to the truth."""
    aligned = align_clip(pred, gt)
    with np.errstate(invalid="ignore"):
        region = np.isfinite(gt[start]) & (np.abs(gt[start] - gt[start - 1]) > 0.1 * np.abs(gt[start - 1]))
    region &= np.isfinite(gt[start - 1])
    means = aligned[:, region].mean(axis=1)  # [T]
    target = means[len(means) - max(1, (len(means) - start) // 3):].mean()
    tolerance = 0.1 * abs(target - means[start - 1])
    late = np.nonzero(np.abs(means[start:] - target) > tolerance)[0]
    return 0 if late.size == 0 else int(late[-1]) + 1


def score(kind: str, clip: str, raw: np.ndarray, rgb: np.ndarray, gt: np.ndarray, short: int,
          steady: tuple[np.ndarray, np.ndarray] | None = None) -> list[dict]:
    """Rows of every mode; ``steady`` = (predictions, pictures) for the modes that use the pictures (default
    ``raw``, ``rgb``)."""
    rows = []
    for name, (mode, pictures) in MODES.items():
        pred, cuts = raw, 0
        if mode is not None:
            prediction, frames = steady if pictures and steady is not None else (raw, rgb)
            out, steps = align_sequence(torch.from_numpy(prediction), stabilize=mode == "stabilize",
                                        frames=torch.from_numpy(frames) if pictures else None)
            pred, cuts = out.numpy(), sum(step.cut for step in steps[1:])
        row = {"kind": kind, "clip": clip, "mode": name, "cuts": cuts, **clip_scores(pred, gt)}
        if clip == "step" and mode is not None:  # (off has no settled value: every frame is its own)
            row["lag"] = settle(pred, gt, short // 2)
        rows.append(row)
    return rows


def table(rows: list[dict], floors: dict[str, float]) -> str:
    lines = ["| predictions | clip | temporal | flicker (% of depth) | AbsRel (%) | false cuts per clip | lag (frames) |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for kind in dict.fromkeys(r["kind"] for r in rows):
        for clip in dict.fromkeys(r["clip"] for r in rows if r["kind"] == kind):
            for mode in MODES:
                picked = [r for r in rows if (r["kind"], r["clip"], r["mode"]) == (kind, clip, mode)]
                lag = f"{np.mean([r['lag'] for r in picked]):.1f}" if "lag" in picked[0] else ""
                lag = lag or ("–" if clip == "step" else "")
                lines.append(f"| {kind} | {clip} | {mode} | {100 * np.mean([r['temporal_change'] for r in picked]):.2f}"
                             f" | {100 * np.mean([r['abs_rel'] for r in picked]):.2f} | "
                             f"{np.mean([r['cuts'] for r in picked]):.2f} | {lag} |")
    for clip, floor in floors.items():
        lines.append(f"| ground truth (floor) | {clip} | | {100 * floor:.2f} | 0 | 0 | |")
    return "\n".join(lines)


def flow_cost(repeats: int = 5) -> dict[str, float]:
    """Seconds per 1280x720 frame of what the pictures add: the shot detector, the flow-guided filter with each flow
    backend, against the same-pixel filter (medians of ``repeats`` frames after one warm-up), and the steadying of
    the pictures before the model (the mean over the clip)."""
    from fiffdepth_core.method.flow import resolve_backend
    from fiffdepth_core.method.shots import ShotDetector
    from fiffdepth_core.method.temporal import TemporalFilter
    from fiffdepth_core.method.temporal_flow import FlowFilter

    frames = list(render_path(720, 1280, 1, 2024, repeats + 2, step=0.04, turn=0.5))
    rgb = [torch.from_numpy(f[0]) for f in frames]
    depth = [torch.from_numpy(unit_depth(f[1], 100.0)) for f in frames]
    candidates = {"shot detector": lambda: ShotDetector(), "same-pixel filter (depth only)": lambda: TemporalFilter()}
    for backend in ("opencv", "torch"):
        try:
            resolve_backend(backend)
        except ImportError:
            continue
        candidates[f"flow-guided filter, {backend} flow"] = (lambda b: lambda: FlowFilter(backend=b))(backend)
    result = {}
    for name, make in candidates.items():
        worker, times = make(), []
        for k in range(len(frames)):
            began = time.perf_counter()
            if isinstance(worker, ShotDetector):
                worker.update(rgb[k])
            elif isinstance(worker, TemporalFilter):
                worker.update(depth[k])
            else:
                worker.update(depth[k], rgb[k])
            if k >= 2:  # the first call has no previous frame, the second warms up
                times.append(time.perf_counter() - began)
        result[name] = float(np.median(times))
    began = time.perf_counter()  # a stream: the mean over the clip (frames are delivered 10 late, then all at once)
    count = sum(1 for _ in steady_frames(iter(rgb)))
    result["steady pictures (exposure levelling, still-area denoising)"] = (time.perf_counter() - began) / count
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenes", type=int, default=8, help="scenes (each gives the four clips)")
    p.add_argument("--frames", type=int, default=24, help="frames of the camera and object clips")
    p.add_argument("--short", type=int, default=16, help="frames of the pumping and step clips")
    p.add_argument("--height", type=int, default=72)
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--step", type=float, default=0.04, help="camera advance per frame, metres")
    p.add_argument("--turn", type=float, default=0.5, help="camera turn per frame, degrees")
    p.add_argument("--mover", type=float, default=0.1, help="speed of the ball of the object clips, metres per frame")
    p.add_argument("--pump", type=float, default=0.25, help="exposure pumping of the pumping clips (0.25 = +-25 %%)")
    p.add_argument("--noise", type=float, default=0.01, help="Gaussian noise of the perturbed predictions")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--checkpoint", help="a FiffDepth checkpoint: adds its real predictions")
    p.add_argument("--random-model", action="store_true", help="add the random tiny model's predictions")
    p.add_argument("--processing-resolution", type=int, default=0, help="for the models (0 = native size)")
    p.add_argument("--exposure-jitter", type=float, default=0.15, help="per-frame gain/gamma change, camera clips")
    p.add_argument("--flow-cost", action="store_true", help="only time the pictures' share per 720p frame")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("fiffdepth_core").setLevel(logging.WARNING)  # not every cut and unsteady frame of every clip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.flow_cost:
        cost = flow_cost()
        (out / "flow_cost.json").write_text(json.dumps(cost, indent=2))
        print("\n".join(f"{name}: {1000 * seconds:.1f} ms per 720p frame" for name, seconds in cost.items()))
        return cost
    models = {}
    if args.checkpoint:
        from fiffdepth_core.weights import load_standalone

        models["model"] = load_standalone(args.checkpoint, device="cpu", dtype=torch.float32)
    if args.random_model:
        import tempfile

        from fiffdepth_core.weights import load_standalone
        from fiffdepth_testkit.models import write_random_pipeline

        with tempfile.TemporaryDirectory() as folder:
            models["random"] = load_standalone(write_random_pipeline(Path(folder) / "tiny", geometry="tiny", seed=0),
                                               device="cpu", dtype=torch.float32)
    rng = np.random.default_rng(args.seed)
    rows, floors, began = [], {}, time.perf_counter()
    for scene in range(args.scenes):
        for clip, (rgb, gt) in clips(scene, args).items():
            floors.setdefault(clip, []).append(temporal_change(gt, gt))
            guess = perturbed(gt, rng, args.noise)
            steadied = steady_clip(torch.from_numpy(rgb)).numpy()  # its flow follows the pictures the CLI would give
            rows += score("perturbed", clip, guess, rgb, gt, args.short, (guess, steadied))
            for kind, backbone in models.items():
                pictures = exposure_jitter(rgb, rng, args.exposure_jitter) if clip == "camera" else rgb
                raw = predictions(backbone, pictures, args.processing_resolution)
                steadied = steady_clip(torch.from_numpy(pictures)).numpy()
                steady = (predictions(backbone, steadied, args.processing_resolution), steadied)
                rows += score(kind, clip, raw, pictures, gt, args.short, steady)
        log.info("scene %d/%d done", scene + 1, args.scenes)
    floors = {clip: float(np.mean(values)) for clip, values in floors.items()}
    result = {"args": vars(args), "rows": rows, "gt_floor": floors, "seconds": round(time.perf_counter() - began, 1)}
    markdown = table(rows, floors)
    (out / "flicker.json").write_text(json.dumps(result, indent=2))
    (out / "flicker.md").write_text(markdown + "\n")
    print(markdown)
    return result


if __name__ == "__main__":
    main()
