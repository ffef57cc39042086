"""The two whole processes `bench_process.py` compares, each reporting where its time went.

    python benchmarks/process_runs.py naive IMAGE CHECKPOINT OUT_DIR [--size 256]
    python benchmarks/process_runs.py cli -- ARGS...      # = python -m fiffdepth_core ARGS..., with phase timers

``naive`` is the official inference script's arithmetic written the plain way over diffusers (``from_pretrained``,
no padding, fp32 on the CPU, ``no_grad``; the image decoded by the project's one reader, as the CLI does), reading the checkpoint's cached empty-prompt embedding and writing the
same two files the CLI writes by default (float32 ``.npy`` and a 16-bit PNG). ``cli`` runs the real command line
in this process with timers wrapped around its loader, backbone verbs and writers; nothing else changes.

Each prints one line ``PHASES {json}`` on stderr at exit: seconds per phase (``start`` = interpreter start-up before
this file ran, ``imports``, ``checkpoint read``, ``model build``, ``encode``, ``UNet``, ``decode``, ``writing``,
``other`` = the rest of the process's own time).
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
from pathlib import Path

T0 = time.perf_counter()
PHASES: dict[str, float] = {}


def process_age() -> float:
    """Seconds since the kernel started this process (from /proc; 0 where there is none)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


START = process_age()


def add(phase: str, seconds: float) -> None:
    PHASES[phase] = PHASES.get(phase, 0.0) + seconds


def timed(phase: str, fn):
    def wrapper(*args, **kwargs):
        began = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            add(phase, time.perf_counter() - began)
    return wrapper


def report() -> None:
    total = time.perf_counter() - T0
    phases = {"start": START, **PHASES, "other": max(0.0, total - sum(PHASES.values()))}
    print("PHASES " + json.dumps({k: round(v, 4) for k, v in phases.items()}), file=sys.stderr, flush=True)


def run_naive(image: str, checkpoint: str, out_dir: str, size: int) -> None:
    began = time.perf_counter()
    import numpy as np
    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from PIL import Image
    from safetensors.torch import load_file

    from fiffdepth_core.fileio import load_image  # the project's one image reader (what the CLI decodes with too)
    add("imports", time.perf_counter() - began)

    began = time.perf_counter()
    unet = UNet2DConditionModel.from_pretrained(Path(checkpoint) / "unet").eval()
    vae = AutoencoderKL.from_pretrained(Path(checkpoint) / "vae").eval()
    embed = load_file(str(Path(checkpoint) / "empty_text_embed.safetensors"))["empty_text_embed"]  # [1,2,D]
    add("checkpoint read + model build", time.perf_counter() - began)

    began = time.perf_counter()
    rgb = load_image(image, rgb=True)[None]  # [1,3,H,W] in [0,1]
    height, width = rgb.shape[-2:]
    scale = size / max(height, width)
    work = F.interpolate(rgb, size=(round(height * scale), round(width * scale)), mode="bilinear",
                         align_corners=False, antialias=True) if scale != 1 else rgb
    add("other", time.perf_counter() - began)
    with torch.no_grad():
        began = time.perf_counter()
        latent = vae.encode(work * 2 - 1).latent_dist.mean * 0.18215  # [1,4,h,w]
        add("encode", time.perf_counter() - began)
        began = time.perf_counter()
        pred = unet(latent, 0, encoder_hidden_states=embed).sample  # [1,4,h,w]
        add("UNet", time.perf_counter() - began)
        began = time.perf_counter()
        decoded = vae.decode(pred / 0.18215).sample  # [1,3,H',W']
        add("decode", time.perf_counter() - began)
    depth = (decoded.mean(dim=1, keepdim=True).clamp(-1, 1) + 1) / 2  # [1,1,H',W']
    if depth.shape[-2:] != (height, width):
        depth = F.interpolate(depth, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    depth = depth[0, 0].clamp(0, 1).numpy()  # [H,W]
    began = time.perf_counter()
    stem = Path(out_dir) / Path(image).stem
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    np.save(f"{stem}.npy", depth.astype(np.float32))
    Image.fromarray((depth * 65535).round().astype(np.uint16)).save(f"{stem}_depth16.png")
    add("writing", time.perf_counter() - began)


def run_cli(argv: list[str]) -> int:
    began = time.perf_counter()
    import torch  # noqa: F401
    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: F401  (the CLI imports them lazily)

    import fiffdepth_core.app.cli as cli
    import fiffdepth_core.weights.checkpoint as checkpoint
    from fiffdepth_core.method.backbone import StandaloneBackbone
    add("imports", time.perf_counter() - began)

    load = checkpoint.load_standalone
    for name in ("inspect_checkpoint", "empty_embedding", "load_state_dict"):
        setattr(checkpoint, name, timed("checkpoint read", getattr(checkpoint, name)))

    def load_standalone(*args, **kwargs):
        began, read_before = time.perf_counter(), PHASES.get("checkpoint read", 0.0)
        try:
            return load(*args, **kwargs)
        finally:
            add("model build", time.perf_counter() - began - (PHASES.get("checkpoint read", 0.0) - read_before))

    checkpoint.load_standalone = load_standalone
    for verb, phase in (("encode", "encode"), ("denoise", "UNet"), ("decode", "decode")):
        setattr(StandaloneBackbone, verb, timed(phase, getattr(StandaloneBackbone, verb)))
    cli._write = timed("writing", cli._write)
    sys.argv = [sys.argv[0], *argv]
    return cli.main()  # as the program runs it: argv from sys.argv


def main() -> int:
    atexit.register(report)
    if len(sys.argv) > 1 and sys.argv[1] == "naive":
        import argparse

        parser = argparse.ArgumentParser(prog="process_runs.py naive")
        parser.add_argument("image")
        parser.add_argument("checkpoint")
        parser.add_argument("out_dir")
        parser.add_argument("--size", type=int, default=256)
        args = parser.parse_args(sys.argv[2:])
        run_naive(args.image, args.checkpoint, args.out_dir, args.size)
        return 0
    if len(sys.argv) > 2 and sys.argv[1:3] == ["cli", "--"]:
        return run_cli(sys.argv[3:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
