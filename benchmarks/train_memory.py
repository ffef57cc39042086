"""Memory of a real-size fine-tuning run, per phase: the trainer's own budget beside what each phase used.

    python -m benchmarks.train_memory                                  # SD2 geometry, 128², batch 1, 2 steps
    python -m benchmarks.train_memory --optimizer adamw8bit
    python -m benchmarks.train_memory --lora --size 480 640 --batch 2 --steps 1 --grad-accum 1
    python -m benchmarks.train_memory --json results.json --set train.ema.enabled=true

Each configuration runs ``train/finetune.py`` in a fresh process on a random-weight model of Stable Diffusion 2's
geometry (``model.random_geometry: sd2``: nothing is downloaded), with the recipe's precision settings (bf16
autocast, bf16 VAE, gradient checkpointing; ``--precision fp32`` on CPUs without bf16 kernels), validation,
checkpoints and the export of every step. It prints the
budget the trainer logged at start, the peak resident memory of each phase (load, train, validate, checkpoint,
export) and, on a GPU, the peak allocated device memory per phase, then the whole run's peak. Real-size runs need
15-20 GB of host memory on a CPU (run one at a time) and about 30 GB of disk in the temporary folder (the base
model, two 10 GB checkpoints while the newer one is written, ``best/`` and ``export/``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEBUG = ROOT / "train" / "configs" / "debug.yaml"
CHILD = """
import json, resource, sys
from train.finetune import main
result = main()  # as the program runs it (argv from sys.argv)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print("@@RESULT@@" + json.dumps({"memory": result["memory"], "losses": result["losses"], "run_peak": peak}))
"""


def overrides(args) -> list[str]:
    height, width = args.size
    sets = ["model.random_geometry=sd2", "model.vae_warmup.steps=0", f"data.size=[{height},{width}]",
            f"train.mixed_precision={'bf16' if args.precision == 'bf16' else chr(34) + 'no' + chr(34)}",
            f"train.vae_dtype={args.precision}", "train.gradient_checkpointing=true",
            f"train.batch_size={args.batch}", f"train.grad_accum={args.grad_accum}", f"train.max_steps={args.steps}",
            "train.checkpoint_every=1", "validation.every=1", "validation.max_images=2", "validation.log_images=0",
            f"validation.dataset={{type: procedural, seed: 999, length: 2, size: [{height},{width}]}}",
            "train.trackers=[]", f"export.single_file={str(args.bundle).lower()}", "train.keep_checkpoints=1",
            f"train.optimizer={args.optimizer}"]
    if args.lora:
        sets.append("train.lora.enabled=true")
    return sets + args.set


def run(args, out: Path) -> dict:
    argv = [sys.executable, "-c", CHILD, "--config", str(DEBUG), "--output-dir", str(out), "--log-level", "INFO"]
    argv += [f"--set={s}" for s in overrides(args)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    budget = [line for line in proc.stderr.splitlines() if line.startswith("  ") or "memory budget" in line]
    if proc.returncode != 0:
        raise SystemExit(f"the run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    result = next(json.loads(line[len("@@RESULT@@"):]) for line in proc.stdout.splitlines()
                  if line.startswith("@@RESULT@@"))
    result["budget"] = budget
    return result


def report(args, result: dict) -> str:
    memory = result["memory"]
    host = memory["peak_resident_gb"]
    lines = [f"configuration: {' '.join(overrides(args))}", "", "budget logged at start:", *result["budget"], "",
             "| phase | peak resident (GB) |" + (" peak CUDA allocated (GB) |" if "peak_cuda_allocated_gb" in memory
                                                  else ""),
             "| --- | --- |" + (" --- |" if "peak_cuda_allocated_gb" in memory else "")]
    for phase, value in host.items():
        row = f"| {phase} | {value:.2f} |"
        if "peak_cuda_allocated_gb" in memory:
            row += f" {memory['peak_cuda_allocated_gb'].get(phase, 0):.2f} |"
        lines.append(row)
    train = host.get("train", 0.0)
    others = max((v for k, v in host.items() if k != "train"), default=0.0)
    lines += ["", f"whole run peak resident: {result['run_peak'] / 1e9:.2f} GB; train phase {train:.2f} GB; "
                  f"highest other phase {others:.2f} GB ({others - train:+.2f} GB over training)",
              f"losses: {result['losses']}"]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, nargs=2, default=[128, 128], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--optimizer", default="adamw", choices=("adamw", "adamw8bit"))
    parser.add_argument("--precision", default="bf16", choices=("bf16", "fp32"),
                        help="bf16: the recipe (bf16 autocast, bf16 VAE); fp32: for CPUs without fast bf16 kernels "
                             "(AVX2-only x86 runs bf16 convolutions ~100x slower than fp32)")
    parser.add_argument("--lora", action="store_true", help="LoRA fine-tune (train.lora.enabled)")
    parser.add_argument("--bundle", action="store_true", help="also export the one-file bundle (3.8 GB more disk)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more config overrides")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fiffdepth-train-memory-") as tmp:
        result = run(args, Path(tmp) / "run")
    print(report(args, result))
    if args.json:
        args.json.write_text(json.dumps({"overrides": overrides(args), **result}, indent=2))
    return result


if __name__ == "__main__":
    main()
