"""The benchmark harness (benchmarks/): its quick mode runs and writes sane, self-consistent results.

Not a timed test: no speed is asserted anywhere, only that the numbers agree with each other and with independent
computations (FLOP counts against the figures in docs/method.md, the guard against a deliberately wrong path).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.measure import STAGES, count_flops
from benchmarks.modes import run_config
from benchmarks.paths import TimedPath, naive_path, tolerance
from benchmarks.report import markdown
from fiffdepth_core.weights.sd2_configs import SD2_UNET_CONFIG, SD2_VAE_CONFIG

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One `--quick` run of all three modes, as a user would start it (a subprocess of this Python)."""
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, "benchmarks/bench_inference.py", "--quick", "--grid", "--large", "--video",
           "--out", str(out), "--name", "quick"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "quick.json").read_text()), (out / "quick.md").read_text(), proc.stdout


def close(a: float, b: float, rel: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)


@pytest.mark.slow
def test_quick_grid_records_are_self_consistent(quick):
    results, _, _ = quick
    meta = results["meta"]
    assert meta["geometry"] == "tiny" and meta["repeats"] == 2 and meta["warmup"] == 1
    records = results["grid"]
    labels = [r["label"] for r in records]
    assert labels[0].startswith("naive") and any(label.startswith("standalone") for label in labels)
    assert ("host" in " ".join(labels)) == bool(os.environ.get("COMFYUI_PATH")) or "host_skipped" in results
    flops = results["flops"][f"{records[0]['size']}x{records[0]['size']}"]
    assert flops["total"] == sum(flops[s] for s in STAGES) > 0
    for rec in records:
        guard = rec["guard"]
        assert guard["valid"] and guard["tolerance"] == 1e-4 and guard["max_abs_diff"] <= 1e-4, rec["label"]
        assert rec["depth_std"] > 1e-3  # the comparison is between real depth maps, not constants
        med, samples = rec["median_ms"], rec["samples_ms"]
        assert all(len(samples[k]) == rec["repeats"] for k in ("total", *STAGES, "other"))
        for stage in STAGES:  # per run each stage lies inside the total, so do the medians
            assert 0 < med[stage] <= med["total"]
        assert close(rec["images_per_s"], rec["batch"] / (med["total"] / 1e3), 1e-3)
        assert close(rec["ms_per_image"], med["total"] / rec["batch"], 1e-3)
        assert close(rec["achieved_tflops"], flops["total"] * rec["batch"] / (med["total"] / 1e3) / 1e12, 1e-3)
        assert close(rec["floor_fraction"], rec["floor_ms"] / med["total"], 1e-3) and 0 < rec["floor_fraction"] < 1
        peak = meta["peak_tflops"][rec["unet_dtype"]]
        assert close(rec["floor_ms"], flops["total"] * rec["batch"] / (peak * 1e12) * 1e3, 1e-6)
        mem = rec["memory"]
        assert mem["peak_mib"] >= mem["base_mib"] > 0 and 0 <= mem["delta_mib"] <= mem["peak_mib"]
    speedups = results["comparisons"]["speedups"]
    naive = records[0]
    for s in speedups:
        rec = next(r for r in records if r["label"] == s["label"])
        assert close(s["vs_naive"], rec["images_per_s"] / naive["images_per_s"], 1e-9)
    for ratio in results["comparisons"]["host_ratios"]:
        assert close(ratio["ratio"], ratio["host_ms"] / ratio["standalone_ms"], 1e-9)


@pytest.mark.slow
def test_quick_large_and_video_modes(quick):
    results, _, _ = quick
    (large,) = results["large"]
    assert large["size"] == 256 and large["tile_size"] == 128
    assert large["tiled"]["memory"]["delta_mib"] >= 0 and large["untiled"]["total_ms"] > 0
    # Tiled != untiled (GroupNorm and mid-block attention see one tile); on random weights by a lot, so only sanity
    assert 0 < large["mean_abs_diff"] <= large["max_abs_diff"] <= 1
    video = results["video"]
    assert video["frames"] == 4 and video["chunk"] == 2
    assert close(video["fps"], video["frames"] / (video["total_ms"] / 1e3), 1e-6)
    assert sum(video["stage_ms"].values()) <= video["total_ms"]


@pytest.mark.slow
def test_quick_markdown_has_every_table(quick):
    results, md, stdout = quick
    assert md.strip() in stdout  # the CLI prints the markdown it wrote
    for heading in ("## Paths", "## FLOPs", "## Large images", "## Video batch"):
        assert heading in md
    for rec in results["grid"]:
        assert f"| {rec['label']} |" in md


def test_flop_count_matches_the_documented_floor_at_512():
    flops = count_flops(SD2_UNET_CONFIG, SD2_VAE_CONFIG, 512, 512)
    for stage, tflop in {"encode": 1.12, "unet": 0.80, "decode": 2.52, "total": 4.43}.items():
        assert abs(flops[stage] / 1e12 - tflop) <= 0.01 * tflop + 0.005, stage


def test_tolerances():
    assert tolerance(torch.float32) == 1e-4 and tolerance(torch.float32, torch.float32) == 1e-4
    assert tolerance(torch.float16) == 16 * torch.finfo(torch.float16).eps
    assert tolerance(torch.float16, torch.bfloat16) == tolerance(torch.bfloat16) == 16 * 2**-7


def test_guard_refuses_a_path_that_disagrees(tiny_backbone):
    unet, vae = tiny_backbone.unet, tiny_backbone.vae
    naive = naive_path(unet, vae, tiny_backbone.empty_embed.float())
    wrong = TimedPath("standalone", "wrong", torch.float32, torch.float32,
                      lambda images, clock: (naive.run(images, clock) + 2e-4).clamp(0, 1))
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    records = run_config([naive, wrong], images, torch.device("cpu"), 1, 1, None, None, None)
    good, bad = records
    assert good["guard"]["valid"] and good["guard"]["max_abs_diff"] == 0 and "median_ms" in good
    assert not bad["guard"]["valid"] and 1.5e-4 < bad["guard"]["max_abs_diff"] <= 2.01e-4
    assert "median_ms" not in bad and "memory" not in bad  # its time does not count
    md = markdown({"meta": {"geometry": "tiny", "device_name": "cpu", "command": "x", "torch": "", "diffusers": "",
                            "threads": 1, "inputs_on": "cpu", "peak_tflops": {}, "peak_source": "",
                            "memory_method": "", "repeats": 1, "warmup": 1},
                   "grid": records, "comparisons": {"speedups": [], "host_ratios": []}, "flops": {}})
    assert "| wrong |" in md and "**NO** (not timed)" in md
