"""The issue's case end to end: a still shot whose exposure pumps, through ``fiffdepth predict`` on a video file.

    python benchmarks/pumping.py                          # the random tiny test model (an unsteady model)
    python benchmarks/pumping.py --checkpoint RUN/best    # a trained checkpoint instead

Renders scene ``--scene`` of ``train/datasets/procedural_scene.py`` (``--height`` x ``--width``), multiplies frame
``k`` by ``1 + --pump * sin(2 pi k / 5)`` (auto-exposure hunting, a flickering light), writes it as an H.264 clip,
runs the CLI with ``--temporal off``, ``align`` and ``stabilize`` (``--format npy``), and reports for each the mean
frame-to-frame change of the saved depth (|depth[t+1] - depth[t]|, averaged over pixels and frames, depth in the
clip's [0, 1] units), the ratio to ``off``, and the scene cuts the CLI logged. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: reach the repository root
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.append(str(_here.parent))

import numpy as np  # noqa: E402

from fiffdepth_core.app.cli import main as cli  # noqa: E402
from fiffdepth_core.app.video import VideoWriter  # noqa: E402
from train.datasets.procedural_scene import render  # noqa: E402


class Cuts(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        if "scene cut" in record.getMessage():
            self.lines.append(record.getMessage())


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="a FiffDepth checkpoint (default: the seeded random tiny model)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--height", type=int, default=96)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--scene", type=int, default=3)
    p.add_argument("--pump", type=float, default=0.25, help="0.25 = +-25 %% exposure")
    p.add_argument("--processing-resolution", type=int, default=64)
    p.add_argument("--crf", type=int, default=16, help="H.264 quality of the clip (the writer's default 16; 0 = lossless)")
    args = p.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        checkpoint = args.checkpoint
        if checkpoint is None:
            from fiffdepth_testkit.models import write_random_pipeline

            checkpoint = str(write_random_pipeline(folder / "tiny", geometry="tiny", seed=0))
        rgb = render(args.height, args.width, args.scene, 0)[0].transpose(1, 2, 0)  # [H,W,3] in [0,1]
        clip = folder / "pumping.mp4"
        with VideoWriter(clip, 12, crf=args.crf) as out:
            for k in range(args.frames):
                gain = 1 + args.pump * np.sin(2 * np.pi * k / 5)
                out.write((np.clip(rgb * gain, 0, 1) * 255).round().astype(np.uint8))
        cuts = Cuts()
        logging.getLogger().addHandler(cuts)
        logging.getLogger().setLevel(logging.INFO)
        for mode in ("off", "align", "stabilize"):
            cuts.lines.clear()
            out = folder / mode
            cli(["predict", str(clip), "--checkpoint", checkpoint, "--processing-resolution",
                 str(args.processing_resolution), "--temporal", mode, "--format", "npy", "--output-dir", str(out)])
            # (not -q: it would hide the INFO lines that report scene cuts)
            depth = np.stack([np.load(out / "pumping" / f"pumping_{k:06d}.npy") for k in range(args.frames)])
            change = float(np.abs(np.diff(depth, axis=0)).mean())
            results[mode] = {"change": change, "cut_messages": list(cuts.lines)}
    off = results["off"]["change"]
    print("| temporal | mean frame-to-frame change | off / this | scene cuts logged |")
    print("| --- | ---: | ---: | ---: |")
    for mode, row in results.items():
        print(f"| {mode} | {row['change']:.4f} | {off / row['change']:.1f}x | {len(row['cut_messages'])} |")
    return results


if __name__ == "__main__":
    main()
