"""Whole-process time: the CLI against a naive diffusers script, on the same full-size weights (CPU by default).

    python benchmarks/bench_process.py                    # SD2 geometry, random weights, 256², 3 alternating rounds
    python benchmarks/bench_process.py --geometry tiny --size 64 --repeats 1     # seconds, for a smoke run

What a user waits for from typing the command to getting the files: interpreter start, imports, reading the
checkpoint, building the models, one pass and writing ``.npy`` + 16-bit PNG. Both processes run
`benchmarks/process_runs.py` (``cli`` = the real ``python -m fiffdepth_core predict`` with timers around its loader,
verbs and writers; ``naive`` = the official script's arithmetic over ``from_pretrained``), one warm-up run each (the
page cache then holds the weights, and the first load has cached nothing else), then ``--repeats`` rounds in
alternating order (cli/naive, naive/cli, ...). Reported: the median wall time of each, their ratio (the target is at
most 1.10), the median CPU time, the median seconds per phase, the load average, and the largest difference between
the two depth maps (the guard: the CLI pads nothing at 256², so both compute the same arithmetic).

Full size needs about 8 GB of memory at peak (the 3.5 GB UNet, its file in the page cache, the VAE). Results go to
``--out`` (``<name>.json`` and ``<name>.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: drop benchmarks/ from sys.path, reach the repo root (last)
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.append(str(_here.parent))

ROOT = Path(__file__).resolve().parents[1]
RUNS = Path(__file__).resolve().with_name("process_runs.py")
PHASES = ("start", "imports", "checkpoint read", "model build", "checkpoint read + model build", "encode", "UNet",
          "decode", "writing", "other")


def write_checkpoint(folder: Path, geometry: str, seed: int) -> Path:
    """A random-weight checkpoint (diffusers layout, cached empty-prompt embedding, no text encoder), once."""
    import torch
    from safetensors.torch import save_file

    from fiffdepth_testkit.models import geometry_configs, write_random_pipeline

    if (folder / "model_index.json").is_file():
        return folder
    partial = folder.with_name(folder.name + ".partial")
    write_random_pipeline(partial, geometry=geometry, seed=seed, with_text_encoder=False)
    width = geometry_configs(geometry)[0]["cross_attention_dim"]
    embed = torch.randn(1, 2, width, generator=torch.Generator().manual_seed(seed + 3))
    save_file({"empty_text_embed": embed}, str(partial / "empty_text_embed.safetensors"))
    partial.rename(folder)
    return folder


def write_image(path: Path, size: int, seed: int) -> Path:
    from PIL import Image

    from fiffdepth_testkit.images import seeded_images

    pixels = (seeded_images(1, size, size, seed=seed)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def run(kind: str, command: list[str], threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"{kind} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    line = [x for x in result.stderr.splitlines() if x.startswith("PHASES ")][-1]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"kind": kind, "wall": wall, "cpu": cpu, "phases": json.loads(line[len("PHASES "):]),
            "load": os.getloadavg()[0]}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--geometry", default="sd2", choices=("sd2", "tiny"), help="model geometry (default sd2)")
    p.add_argument("--size", type=int, default=256, help="square input and processing size in px (default 256)")
    p.add_argument("--repeats", type=int, default=3, help="alternating rounds after the warm-up (default 3)")
    p.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of both processes (default 2)")
    p.add_argument("--checkpoint", type=Path, help="use this checkpoint (diffusers layout with a cached embedding)")
    p.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "results" / "process",
                   help="scratch folder: the random checkpoint, the image, the outputs")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "measured",
                   help="where the results go (default benchmarks/measured/, kept in the repository)")
    p.add_argument("--name", help="file stem of the results (default process_<geometry>_<size>)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    checkpoint = args.checkpoint or write_checkpoint(args.work / f"{args.geometry}_seed{args.seed}", args.geometry,
                                                     args.seed)
    image = write_image(args.work / "photo.png", args.size, args.seed)
    out = {"cli": args.work / "out_cli", "naive": args.work / "out_naive"}
    commands = {
        "cli": [sys.executable, str(RUNS), "cli", "--", "predict", str(image), "--checkpoint", str(checkpoint),
                "--processing-resolution", str(args.size), "--device", "cpu", "--output-dir", str(out["cli"]),
                "--overwrite", "-q"],
        "naive": [sys.executable, str(RUNS), "naive", str(image), str(checkpoint), str(out["naive"]),
                  "--size", str(args.size)],
    }
    for kind in ("cli", "naive"):  # warm-up: page cache, first-load work
        run(kind, commands[kind], args.threads)
    samples = {"cli": [], "naive": []}
    for round_ in range(args.repeats):
        for kind in (("cli", "naive") if round_ % 2 == 0 else ("naive", "cli")):
            sample = run(kind, commands[kind], args.threads)
            samples[kind].append(sample)
            print(f"round {round_ + 1} {kind:5s} {sample['wall']:7.2f} s wall {sample['cpu']:7.2f} s CPU "
                  f"load {sample['load']:.1f}", flush=True)
    ours = np.load(out["cli"] / "photo.npy")
    theirs = np.load(out["naive"] / "photo.npy")
    result = {
        "geometry": args.geometry, "size": args.size, "threads": args.threads, "repeats": args.repeats,
        "checkpoint": str(checkpoint), "python": sys.version.split()[0], "torch": _version("torch"),
        "diffusers": _version("diffusers"), "cpu_count": os.cpu_count(), "samples": samples,
        "max_abs_depth_difference": float(np.abs(ours - theirs).max()),
    }
    for kind in samples:
        result[kind] = {
            "wall": statistics.median(s["wall"] for s in samples[kind]),
            "cpu": statistics.median(s["cpu"] for s in samples[kind]),
            "phases": {p: statistics.median(s["phases"].get(p, 0.0) for s in samples[kind])
                       for p in PHASES if any(p in s["phases"] for s in samples[kind])},
        }
    result["ratio"] = result["cli"]["wall"] / result["naive"]["wall"]
    result["cpu_ratio"] = result["cli"]["cpu"] / result["naive"]["cpu"]
    result["load_average"] = [round(s["load"], 1) for kind in samples for s in samples[kind]]
    markdown = report(result)
    print(markdown)
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.name or f"process_{args.geometry}_{args.size}"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1))
    (args.out / f"{name}.md").write_text(markdown)
    return result


def report(result: dict) -> str:
    rows = [f"Whole process, {result['geometry']} geometry, {result['size']}² on the CPU, {result['threads']} "
            f"threads, median of {result['repeats']} alternating runs; torch {result['torch']}, diffusers "
            f"{result['diffusers']}, {result['cpu_count']} cores, load average during the runs "
            f"{min(result['load_average'])}–{max(result['load_average'])}.", "",
            "| phase (s) | CLI | naive script |", "| --- | ---: | ---: |"]
    for phase in PHASES:
        if phase in result["cli"]["phases"] or phase in result["naive"]["phases"]:
            cells = [f"{result[k]['phases'][phase]:.2f}" if phase in result[k]["phases"] else "–"
                     for k in ("cli", "naive")]
            rows.append(f"| {phase} | {cells[0]} | {cells[1]} |")
    rows += [f"| **wall** | **{result['cli']['wall']:.2f}** | **{result['naive']['wall']:.2f}** |",
             f"| CPU | {result['cli']['cpu']:.2f} | {result['naive']['cpu']:.2f} |", "",
             f"CLI / naive: **{result['ratio']:.3f}** wall, {result['cpu_ratio']:.3f} CPU. Largest |depth "
             f"difference| between the two outputs: {result['max_abs_depth_difference']:.2e}.", ""]
    return "\n".join(rows)


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


if __name__ == "__main__":
    main()
