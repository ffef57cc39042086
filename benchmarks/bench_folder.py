"""Folder throughput of ``python -m fiffdepth_core predict``: one process vs several, decoding on the main thread vs
in background workers, and the share of the time spent decoding images.

    python benchmarks/bench_folder.py                      # 200 JPEGs of 240x320, tiny model, 1 and 2 processes
    python benchmarks/bench_folder.py --geometry sd2 --images 64 --size 512x512 --processing-resolution 512 \\
        --runs "1:0,1:auto" --device cuda                   # one GPU at 512² (random SD2-geometry weights)

Each configuration ``PROCESSES:WORKERS`` runs the real CLI in fresh processes (torchrun for more than one), with
``--threads`` OpenMP threads per process, and reads the images/s the CLI logs (timed from the model being loaded to
the last image written, on the main process; model loading and interpreter start-up are reported apart). The decode
share is the time to decode every image on one thread, divided by the one-process, main-thread run's time.
Results go to ``benchmarks/results/folder.{json,md}`` (``--out`` picks another folder). Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    sys.path.append(str(ROOT))

import numpy as np  # noqa: E402

RATE = re.compile(r"wrote (\d+) image\(s\) .* in ([0-9.]+) s \(([0-9.]+) images/s\)")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", type=int, default=200, help="number of images in the folder (default 200)")
    p.add_argument("--size", default="240x320", help="HxW of the images (default 240x320)")
    p.add_argument("--format", default="jpg", choices=("jpg", "png"), help="image file format (default jpg)")
    p.add_argument("--geometry", default="tiny", choices=("tiny", "sd2"), help="random-weight model geometry")
    p.add_argument("--processing-resolution", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--runs", default="1:0,1:auto,2:0,2:auto",
                   help="comma-separated PROCESSES:WORKERS configurations (default 1:0,1:auto,2:0,2:auto)")
    p.add_argument("--threads", type=int, default=1, help="OpenMP threads per process (default 1)")
    p.add_argument("--device", default="cpu", help="--device for the CLI (default cpu)")
    p.add_argument("--repeats", type=int, default=1, help="runs per configuration; the best is reported")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--name", default="folder")
    return p.parse_args(argv)


def make_folder(folder: Path, count: int, height: int, width: int, fmt: str) -> None:
    """Seeded photos-like images: smooth gradients plus texture, so that JPEG/PNG decoding costs what it does."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(count):
        base = 127 + 90 * np.sin(xx / (11 + i % 7))[..., None] * np.cos(yy / (17 + i % 5))[..., None]
        image = np.clip(base * np.array([1.0, 0.8, 0.6]) + rng.normal(0, 12, (height, width, 3)), 0, 255)
        Image.fromarray(image.astype(np.uint8)).save(folder / f"img{i:04d}.{fmt}", quality=90)


def decode_seconds(folder: Path) -> float:
    """One thread decoding every image of the folder the way the CLI does (file -> RGB float tensor)."""
    import torch

    from fiffdepth_core.fileio import list_images, load_image
    from fiffdepth_core.method import to_rgb

    torch.set_num_threads(1)
    paths = list_images([folder])
    started = time.perf_counter()
    for path in paths:
        to_rgb(load_image(path)[None])
    return time.perf_counter() - started


def run_cli(folder: Path, checkpoint: Path, out: Path, processes: int, workers: str, args) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        env.pop(name, None)
    launcher = [sys.executable]
    if processes > 1:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr",
                     "127.0.0.1", "--master_port", str(port)]
    command = launcher + ["-m", "fiffdepth_core", "predict", str(folder), "--checkpoint", str(checkpoint),
                          "--output-dir", str(out), "--format", "npy", "--processing-resolution",
                          str(args.processing_resolution), "--batch-size", str(args.batch_size), "--device",
                          args.device]
    if workers != "auto":
        command += ["--workers", workers]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    match = RATE.search(result.stderr)
    if match is None:
        raise RuntimeError(f"no throughput line in the CLI's log:\n{result.stderr[-2000:]}")
    images, seconds, rate = int(match.group(1)), float(match.group(2)), float(match.group(3))
    if workers == "auto":
        from fiffdepth_core.app import default_workers

        workers = f"auto ({default_workers(processes)})"
    return {"processes": processes, "workers": workers, "images": images, "loop_seconds": seconds,
            "images_per_second": rate, "wall_seconds": wall, "startup_seconds": wall - seconds}


def main(argv=None) -> dict:
    args = parse_args(argv)
    height, width = (int(v) for v in args.size.lower().split("x"))
    from fiffdepth_testkit.models import write_random_pipeline

    with tempfile.TemporaryDirectory(prefix="fiffdepth-bench-folder-") as scratch:
        scratch = Path(scratch)
        folder = scratch / "images"
        make_folder(folder, args.images, height, width, args.format)
        checkpoint = write_random_pipeline(scratch / "model", geometry=args.geometry, seed=0)
        decode = decode_seconds(folder)
        runs = []
        for k, spec in enumerate(args.runs.split(",")):
            processes, workers = spec.split(":")
            best = None
            for repeat in range(args.repeats):
                out = scratch / f"out-{k}-{repeat}"
                row = run_cli(folder, checkpoint, out, int(processes), workers, args)
                if best is None or row["images_per_second"] > best["images_per_second"]:
                    best = row
            runs.append(best)
            print(f"{spec}: {best['images_per_second']:.2f} images/s", file=sys.stderr)
    baseline = next((r for r in runs if r["processes"] == 1 and r["workers"] == "0"), None)
    share = decode / baseline["loop_seconds"] if baseline else None
    results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0]},
               "setup": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "decode_seconds": decode, "decode_share": share, "runs": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(results, indent=2) + "\n")
    markdown = render(results)
    (args.out / f"{args.name}.md").write_text(markdown)
    sys.stdout.write(markdown)
    return results


def render(results: dict) -> str:
    setup = results["setup"]
    lines = [f"## Folder throughput: {setup['images']} {setup['format'].upper()} images of {setup['size']}, "
             f"{setup['geometry']} model at {setup['processing_resolution']}, batch {setup['batch_size']}, "
             f"{setup['threads']} thread(s) per process, device {setup['device']}", "",
             "| processes | decode workers | images/s | loop s | start-up + load s |", "| --- | --- | --- | --- | --- |"]
    for r in results["runs"]:
        lines.append(f"| {r['processes']} | {r['workers']} | {r['images_per_second']:.2f} | {r['loop_seconds']:.1f} | "
                     f"{r['startup_seconds']:.1f} |")
    if results["decode_share"] is not None:
        lines += ["", f"Decoding all images on one thread: {results['decode_seconds']:.2f} s, "
                  f"{100 * results['decode_share']:.0f} % of the one-process main-thread run's time."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
