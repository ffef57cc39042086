"""Peak memory of the CLI's video path: a generated 720p clip through ``python -m fiffdepth_core predict``.

    python benchmarks/video_memory.py                        # 1 minute of 1280x720 at 30 fps, and 10 s to compare,
                                                             # two passes over the disk cache and --stream-window 48
    python benchmarks/video_memory.py --seconds 60 --compare 0 --format controlnet npy

The clip pans across a procedural scene (``train/datasets/procedural_scene.py``), encoded with PyAV. The CLI runs
in a child process on a tiny random-weight checkpoint at a small processing resolution (the model is not what is
measured: decoding, the per-frame resize back to 720p, alignment, the disk cache, the two passes and the encoders
are); its peak resident memory is the kernel's ``ru_maxrss`` for that child. Running a shorter clip too shows
whether memory grows with the clip's length (it should not). Prints a markdown table and writes
``video_memory.json`` to ``--out``. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.append(str(_here.parent))

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"


def write_clip(path: Path, seconds: float, fps: int, width: int, height: int) -> int:
    """A panning clip, encoded frame by frame; returns the frame count."""
    from fiffdepth_core.app import VideoWriter
    from train.datasets.procedural_scene import render

    pano_width = width * 2
    rgb, _ = render(height, pano_width, 3, 0)  # [3,H,2W]
    pano = np.round(rgb.transpose(1, 2, 0) * 255).astype(np.uint8)  # [H,2W,3]
    frames = int(round(seconds * fps))
    with VideoWriter(path, fps, crf=23) as out:
        for k in range(frames):
            x = int(round((width - 1) * (0.5 - 0.5 * np.cos(2 * np.pi * k / max(frames, 1)))))  # there and back
            out.write(pano[:, x:x + width])
    return frames


def run_cli(clip: Path, checkpoint: Path, out: Path, args, window: int) -> dict:
    cmd = [sys.executable, "-m", "fiffdepth_core", "predict", str(clip), "--checkpoint", str(checkpoint),
           "--processing-resolution", str(args.processing_resolution), "--batch-size", str(args.batch_size),
           "--temporal", args.temporal, "--format", *args.format, "--output-dir", str(out), "-q", "--device", "cpu",
           "--stream-window", str(window)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the CLI failed ({os.waitstatus_to_exitcode(status)}): {' '.join(cmd)}")
    return {"peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "seconds": round(seconds, 1)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--compare", type=float, default=10.0, help="a shorter clip to compare with (0 = none)")
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--size", default="1280x720", help="WxH")
    p.add_argument("--processing-resolution", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--temporal", default="stabilize", choices=("off", "align", "stabilize"))
    p.add_argument("--format", nargs="+", default=["controlnet"],
                   help="CLI --format (per-frame npy/png16/exr of a 1-minute 720p clip take 3-7 GB of disk)")
    p.add_argument("--stream-window", type=int, nargs="+", default=[0, 48],
                   help="CLI --stream-window values to measure (0 = two passes over the disk cache)")
    p.add_argument("--checkpoint", help="default: a tiny random-weight checkpoint made here")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of the CLI process (OMP_NUM_THREADS); on a "
                   "shared machine more threads than free cores make small tensor ops many times slower")
    p.add_argument("--workdir", help="scratch folder (default: a temporary folder, removed at the end)")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        scratch = Path(scratch)
        checkpoint = Path(args.checkpoint) if args.checkpoint else None
        if checkpoint is None:
            from fiffdepth_testkit.models import write_random_pipeline

            checkpoint = write_random_pipeline(scratch / "tiny", geometry="tiny", seed=0)
        for seconds in [s for s in (args.compare, args.seconds) if s > 0]:
            clip = scratch / f"clip_{seconds:g}s.mp4"
            began = time.perf_counter()
            frames = write_clip(clip, seconds, args.fps, width, height)
            encode = time.perf_counter() - began
            for window in args.stream_window:
                result = run_cli(clip, checkpoint, scratch / f"out_{seconds:g}s_{window}", args, window)
                rows.append({"seconds_of_video": seconds, "frames": frames, "size": f"{width}x{height}",
                             "stream_window": window, "clip_encode_seconds": round(encode, 1), **result})
    report = {"args": vars(args), "rows": rows}
    lines = ["| clip | frames | passes | peak RSS (MB) | CLI wall time (s) |", "| --- | ---: | --- | ---: | ---: |"]
    lines += [f"| {r['seconds_of_video']:g} s {r['size']} | {r['frames']} | "
              f"{'two, disk cache' if not r['stream_window'] else 'one, --stream-window %d' % r['stream_window']} | "
              f"{r['peak_rss_mb']:.0f} | {r['seconds']:.0f} |" for r in rows]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "video_memory.json").write_text(json.dumps(report, indent=2))
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main()
