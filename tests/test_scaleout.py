"""Data-parallel prediction, pseudo-labelling and evaluation: two CPU processes (gloo, under torchrun) against one.

Each job runs under ``tests/scaleout_driver.py``, which records every output write per process and can kill one
process abruptly in the middle (``os._exit``: no clean-up, like a killed job). The checks: the files are
byte-identical to a one-process run, every output is written exactly once, the metrics are equal, and a job killed
halfway and relaunched finishes without redoing the files that were finished. The one-process reference also runs
with one thread: on the CPU a different thread count (or a different batch composition) changes results in the
last bits.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fixtures_train import random_rgb, write_rgb, write_tiny_depth_anything

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DRIVER = str(Path(__file__).with_name("scaleout_driver.py"))


def launch(target: str, args: list[str], tmp_path: Path, processes: int = 2, patch: str = "",
           expect_ok: bool = True):
    """Run ``target`` in ``processes`` CPU processes (torchrun for 2, a plain process for 1), one thread each;
    returns ``(result, [(rank, function, first argument) per completed call of the patched functions])``."""
    with socket.socket() as sock:  # a free loopback port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path / f"calls-{port}.tsv"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SCALEOUT_PATCH": patch, "SCALEOUT_LOG": str(log),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        env.pop(name, None)
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr",
                     "127.0.0.1", "--master_port", str(port)]
    result = subprocess.run(launcher + [DRIVER, target, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    if expect_ok:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    else:
        assert result.returncode != 0, "the job was meant to be killed"
    calls = [tuple(line.split("\t")) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def tree(folder: Path, pattern: str = "*") -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob(pattern)) if p.is_file()}


def stamps(folder: Path, pattern: str) -> dict[str, tuple[int, int]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in folder.rglob(pattern) if p.is_file()}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Seven small photos of two sizes, interleaved so that each process's block mixes sizes."""
    folder = tmp_path_factory.mktemp("photos")
    sizes = [(24, 40), (24, 40), (32, 24), (24, 40), (32, 24), (32, 24), (24, 40)]
    for i, (h, w) in enumerate(sizes):
        write_rgb(folder / f"p{i}.png", random_rgb(h, w, i))
    return folder


# -- python -m fiffdepth_core predict ----------------------------------------------------------------------------
def predict_args(photos: Path, checkpoint: Path, out: Path, *extra: str, batch: int = 2) -> list[str]:
    return ["predict", str(photos), "--checkpoint", str(checkpoint), "--output-dir", str(out),
            "--processing-resolution", "64", "--batch-size", str(batch), "--quiet", *extra]


def test_predict_two_processes_equal_one(photos, tiny_checkpoint, tmp_path):
    formats = ["--format", "npy", "png16", "controlnet", "--normalization", "whole_batch"]
    launch("fiffdepth_core", predict_args(photos, tiny_checkpoint, tmp_path / "one", *formats, "--workers", "0"),
           tmp_path, processes=1)
    _, calls = launch("fiffdepth_core", predict_args(photos, tiny_checkpoint, tmp_path / "two", *formats,
                                                       "--workers", "1"),
                        tmp_path, patch="fiffdepth_core.fileio.writers:write_npy,fiffdepth_core.fileio.writers:write_png16,"
                                        "fiffdepth_core.fileio.writers:write_png8")
    one, two = tree(tmp_path / "one", "p*"), tree(tmp_path / "two", "p*")
    assert len(one) == 7 * 3 and sorted(two) == sorted(one)
    assert [name for name in one if one[name] != two[name]] == []  # byte-identical, whole-run ControlNet maps too
    writes = Counter(Path(path).name for _, _, path in calls)
    assert sorted(writes) == sorted(one) and set(writes.values()) == {1}  # each output written once ...
    owners = {Path(path).name.split("_")[0].split(".")[0]: rank for rank, _, path in calls}
    assert owners == {"p0": "0", "p1": "0", "p2": "0", "p3": "0", "p4": "1", "p5": "1", "p6": "1"}  # ... by its owner


def test_predict_killed_halfway_resumes_without_redoing_finished_images(photos, tiny_checkpoint, tmp_path):
    # Batch size 1: a resumed run batches the remaining images differently, which moves the last float bits.
    launch("fiffdepth_core", predict_args(photos, tiny_checkpoint, tmp_path / "one", "--workers", "0", batch=1),
           tmp_path, processes=1)
    out = tmp_path / "two"
    # Rank 1 (p4..p6) dies while writing the 16-bit PNG of its second image: p5 is left with its .npy only.
    launch("fiffdepth_core", predict_args(photos, tiny_checkpoint, out, batch=1), tmp_path,
           patch="fiffdepth_core.fileio.writers:write_png16:1:1", expect_ok=False)
    before = stamps(out, "p*")
    assert "p4.npy" in before and "p4_depth16.png" in before and "p6.npy" not in before
    assert "p5.npy" in before and "p5_depth16.png" not in before
    complete = {f"p{i}" for i in range(7) if {f"p{i}.npy", f"p{i}_depth16.png"} <= set(before)}
    finished = {name: stamp for name, stamp in before.items() if name.split("_")[0].split(".")[0] in complete}
    _, calls = launch("fiffdepth_core", predict_args(photos, tiny_checkpoint, out, "--skip-existing", batch=1),
                      tmp_path, patch="fiffdepth_core.fileio.writers:write_npy,fiffdepth_core.fileio.writers:write_png16")
    after = stamps(out, "p*")
    assert {name: after[name] for name in finished} == finished  # finished files untouched: same inode and time
    redone = Counter(Path(path).name for _, _, path in calls)
    assert set(redone).isdisjoint(finished) and set(redone.values()) == {1}
    assert {"p5.npy", "p5_depth16.png", "p6.npy", "p6_depth16.png"} <= set(redone)  # the cut image is redone whole
    one, two = tree(tmp_path / "one", "p*"), tree(out, "p*")
    assert sorted(two) == sorted(one) and [name for name in one if one[name] != two[name]] == []


# -- train/pseudo_labels.py ----------------------------------------------------------------------------------------
def test_pseudo_labels_two_processes_equal_one_and_resume(photos, tmp_path):
    teacher = write_tiny_depth_anything(tmp_path / "teacher")

    def args(out: Path, workers: str) -> list[str]:
        return ["--images", str(photos), "--out", str(out), "--model", str(teacher), "--batch-size", "2",
                "--device", "cpu", "--workers", workers]

    result, _ = launch("train/pseudo_labels.py", args(tmp_path / "one", "0"), tmp_path, processes=1)
    assert "labels written: 7, already there: 0, unreadable images: 0" in result.stderr
    args = args(tmp_path / "two", "1")
    # Rank 0 (p0..p3) is killed before its third label: p0 and p1 are done.
    launch("train/pseudo_labels.py", args, tmp_path,
             patch="train.datasets.image_sources:save_label:0:2", expect_ok=False)
    before = stamps(tmp_path / "two", "*.npy")
    assert {"p0.npy", "p1.npy"} <= set(before) and "p3.npy" not in before
    result, calls = launch("train/pseudo_labels.py", args, tmp_path, patch="train.datasets.image_sources:save_label")
    assert {name: stamps(tmp_path / "two", "*.npy")[name] for name in before} == before
    saved = Counter(Path(path).name for _, _, path in calls)
    assert set(saved).isdisjoint(before) and set(saved.values()) == {1} and len(saved) == 7 - len(before)
    assert f"labels written: {len(saved)}, already there: {len(before)}, unreadable images: 0" in result.stderr
    one, two = tree(tmp_path / "one"), tree(tmp_path / "two")
    assert sorted(two) == sorted(one) and all(one[name] == two[name] for name in one)


# -- train/evaluate.py ---------------------------------------------------------------------------------------------
def test_evaluate_two_processes_equal_one_and_resume(tiny_checkpoint, tmp_path):
    from test_evaluate import IDS, make_nyu

    data = tmp_path / "nyu"
    split = make_nyu(data)

    def args(out: Path, workers: str) -> list[str]:
        return ["--checkpoint", str(tiny_checkpoint), "--dataset", "nyuv2", "--data-root", str(data), "--split",
                str(split), "--output-dir", str(out), "--name", "tiny", "--no-progress", "--per-image",
                "--workers", workers]

    launch("train/evaluate.py", args(tmp_path / "one", "0"), tmp_path, processes=1)
    out = tmp_path / "two"
    # Rank 0 owns samples 0-1, rank 1 sample 2; rank 0 dies after caching its first prediction.
    launch("train/evaluate.py", args(out, "1"), tmp_path, patch="fiffdepth_core.fileio.writers:write_npy:0:1",
             expect_ok=False)
    before = stamps(out / "predictions", "*.npy")
    assert f"{IDS[0]}.npy" in before and f"{IDS[1]}.npy" not in before
    result, calls = launch("train/evaluate.py", args(out, "1"), tmp_path, patch="fiffdepth_core.fileio.writers:write_npy")
    assert {name: stamps(out / "predictions", "*.npy")[name] for name in before} == before  # reused, not redone
    cached = Counter(Path(path).relative_to(out / "predictions").as_posix() for _, _, path in calls)
    assert set(cached).isdisjoint(before) and set(cached.values()) == {1}
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((out / "results.json").read_text())
    assert two["metrics"] == one["metrics"] and two["counts"] == one["counts"]
    assert (out / "per_image.csv").read_bytes() == (tmp_path / "one" / "per_image.csv").read_bytes()
    assert tree(out / "predictions", "*.npy") == tree(tmp_path / "one" / "predictions", "*.npy")
    assert result.stdout.count("| **tiny** |") == 1  # one table, printed by the main process only
    assert np.isfinite(two["metrics"]["abs_rel"])


# -- benchmarks/bench_folder.py ------------------------------------------------------------------------------------
def test_folder_benchmark_figures_are_consistent(tmp_path):
    command = [sys.executable, "benchmarks/bench_folder.py", "--images", "6", "--size", "32x48", "--runs", "1:0,2:1",
               "--processing-resolution", "64", "--out", str(tmp_path), "--name", "smoke"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((tmp_path / "smoke.json").read_text())
    assert [(r["processes"], r["workers"]) for r in figures["runs"]] == [(1, "0"), (2, "1")]
    for run in figures["runs"]:
        assert run["images"] == 6 and run["wall_seconds"] > run["loop_seconds"] > 0
        assert 6 / run["images_per_second"] == pytest.approx(run["loop_seconds"], abs=0.006)  # logged to 0.01 s
    assert figures["decode_share"] == pytest.approx(figures["decode_seconds"] / figures["runs"][0]["loop_seconds"])
    assert "| 2 | 1 |" in (tmp_path / "smoke.md").read_text() and "| 2 | 1 |" in result.stdout
