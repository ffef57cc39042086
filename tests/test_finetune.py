"""Training end to end on tiny models: a short run, exact resume, export -> load -> predict, bad configs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from fiffdepth_core.method.predictor import PredictConfig, predict_depth
from fiffdepth_core.weights.checkpoint import inspect_checkpoint, load_standalone
from train.config import ConfigError, load_config
from train.finetune import lr_factor, main

DEBUG = str(Path(__file__).resolve().parents[1] / "train" / "configs" / "debug.yaml")
FAST = ["model.vae_warmup.steps=0", "data.size=[32,32]", "train.batch_size=2", "validation.max_images=2",
        "validation.every=2", "train.checkpoint_every=2", "train.trackers=[]", "export.single_file=false"]


def run(out: Path, steps: int, *extra: str, resume: bool = False) -> dict:
    argv = ["--config", DEBUG, "--output-dir", str(out), "--log-level", "WARNING"]
    argv += [f"--set={s}" for s in FAST + [f"train.max_steps={steps}", *extra]]
    return main(argv + (["--resume", "latest"] if resume else []))


@pytest.mark.slow
def test_two_steps_train_checkpoint_validate_and_export(tmp_path):
    result = run(tmp_path / "run", 2, "train.trackers=[tensorboard]", "export.single_file=true",
                 "train.grad_accum=2")
    losses = result["losses"]
    assert len(losses) == 2 and all(math.isfinite(x) and x > 0 for x in losses)
    run_dir = tmp_path / "run"
    assert (run_dir / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "step-00000002" / "trainer.json").is_file()
    assert list((run_dir / "logs").rglob("events.out.tfevents.*")), "no TensorBoard events were written"
    assert (run_dir / "best" / "model_index.json").is_file() and result["state"]["best_step"] == 2
    for exported in (run_dir / "export", run_dir / "export" / "fiffdepth.safetensors"):
        info = inspect_checkpoint(exported)
        backbone = load_standalone(exported)
        with torch.inference_mode():
            depth = predict_depth(backbone, torch.rand(1, 3, 32, 48), PredictConfig(processing_resolution=0))
        assert depth.shape == (1, 32, 48) and torch.isfinite(depth).all()
    assert info.layout == "bundle"


@pytest.mark.slow
def test_export_holds_the_trained_weights(tmp_path):
    run(tmp_path / "run", 2)
    base = load_standalone(tmp_path / "run" / "base_model")
    trained = load_standalone(tmp_path / "run" / "export")
    moved = [(a - b).abs().max().item() for a, b in zip(base.unet.parameters(), trained.unet.parameters())]
    assert max(moved) > 0  # the UNet was trained
    for a, b in zip(base.vae.parameters(), trained.vae.parameters()):
        assert torch.equal(a, b)  # the VAE is frozen
    assert torch.equal(base.empty_embed, trained.empty_embed)


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path):
    full = run(tmp_path / "full", 4)["losses"]
    first = run(tmp_path / "split", 2)["losses"]
    second = run(tmp_path / "split", 4, resume=True)["losses"]
    assert first + second == full  # bit-identical loss sequence on the CPU


@pytest.mark.slow
def test_resume_refuses_another_config_and_reuse_without_resume(tmp_path):
    run(tmp_path / "run", 2)
    with pytest.raises(ValueError, match="loss.gm"):
        run(tmp_path / "run", 4, "loss.gm=0.7", resume=True)
    with pytest.raises(FileExistsError, match="--resume latest"):
        run(tmp_path / "run", 4)


def test_missing_dataset_root_fails_before_any_model_loads(tmp_path):
    with pytest.raises(ValueError, match="does-not-exist"):
        run(tmp_path / "run", 2, f"data.synthetic=[{{type: hypersim, root: {tmp_path}/does-not-exist, split: x}}]")
    assert not (tmp_path / "run" / "base_model").exists()


@pytest.mark.parametrize("override, key", [
    ("train.batch_size=0", "train.batch_size"),
    ("data.size=[30,32]", "data.size"),
    ("train.mixed_precision=fp8", "train.mixed_precision"),
    ("optim.warmup_steps=500", "optim.warmup_steps"),
    ("model.pretrained=somewhere", "model.pretrained"),
])
def test_bad_config_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(DEBUG, [override])


def test_unset_environment_variable_is_named(monkeypatch):
    monkeypatch.delenv("HYPERSIM_ROOT", raising=False)
    with pytest.raises(ConfigError, match="HYPERSIM_ROOT"):
        load_config(Path(DEBUG).with_name("fiffdepth_sd2.yaml"))


def test_learning_rate_schedule_warms_up_then_decays_to_one_percent():
    factor = lr_factor({"warmup_steps": 100, "decay_steps": 20000, "final_lr_fraction": 0.01})
    assert factor(0) == pytest.approx(0.01) and factor(99) == pytest.approx(1.0)
    assert factor(100) == pytest.approx(1.0)
    assert factor(20000) == pytest.approx(0.01) and factor(50000) == pytest.approx(0.01)
    midpoint = 100 + (20000 - 100) // 2
    assert factor(midpoint) == pytest.approx(0.1, rel=1e-3)


@pytest.mark.slow
def test_two_process_data_parallel_run(tmp_path):
    """DDP over gloo on the CPU (accelerate's MULTI_CPU): both ranks train, rank 0 checkpoints and exports."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:  # a free loopback port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(port),
            str(root / "train" / "finetune.py"), "--config", DEBUG, "--output-dir", str(tmp_path / "run"),
            "--log-level", "WARNING"] + [f"--set={s}" for s in FAST + ["train.max_steps=2"]]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    checkpoint = tmp_path / "run" / "checkpoints" / "step-00000002"
    assert (checkpoint / "rng_0.safetensors").is_file() and (checkpoint / "rng_1.safetensors").is_file()
    backbone = load_standalone(tmp_path / "run" / "export")
    with torch.inference_mode():
        depth = predict_depth(backbone, torch.rand(1, 3, 32, 32), PredictConfig(processing_resolution=0))
    assert torch.isfinite(depth).all()


@pytest.mark.slow
def test_ema_resumes_exactly_and_is_what_gets_exported(tmp_path):
    ema = "train.ema.enabled=true"
    full = run(tmp_path / "full", 4, ema, "train.ema.decay=0.5")
    run(tmp_path / "split", 2, ema, "train.ema.decay=0.5")
    second = run(tmp_path / "split", 4, ema, "train.ema.decay=0.5", resume=True)
    assert full["losses"][2:] == second["losses"]
    exported = [load_standalone(tmp_path / name / "export").unet for name in ("full", "split")]
    for a, b in zip(*(m.parameters() for m in exported)):
        assert torch.equal(a, b)  # the EMA state survived the resume
    from safetensors.torch import load_file

    raw = load_file(str(tmp_path / "full" / "checkpoints" / "step-00000004" / "model.safetensors"))
    name, live = next((k, v) for k, v in raw.items() if k.endswith("conv_in.weight"))
    assert not torch.equal(live, exported[0].conv_in.weight)  # the export holds the averaged, not the live, weights


@pytest.mark.slow
def test_resuming_from_an_older_checkpoint_sets_later_ones_aside(tmp_path):
    run(tmp_path / "run", 4)
    older = tmp_path / "run" / "checkpoints" / "step-00000002"
    main(["--config", DEBUG, "--output-dir", str(tmp_path / "run"), "--log-level", "WARNING", "--resume", str(older)]
         + [f"--set={s}" for s in FAST + ["train.max_steps=3", "train.checkpoint_every=3"]])
    checkpoints = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("step-*")) == ["step-00000002", "step-00000003"]
    assert (checkpoints / "abandoned" / "step-00000004" / "trainer.json").is_file()  # kept, not deleted


def test_the_recipe_config_builds_its_datasets(tmp_path, monkeypatch):
    """fiffdepth_sd2.yaml with every root pointed at small real-format folders: the readers accept its specs."""
    import numpy as np
    from fixtures_train import make_hypersim, make_shards, make_vkitti, write_label

    from train.finetune import build_datasets

    split = make_hypersim(tmp_path / "hypersim" / "train", [np.full((48, 64), 2000, dtype=np.uint16)])
    split.rename(split.with_name("filename_list_train.txt"))
    make_vkitti(tmp_path / "vkitti", [("Scene01", "clone", 0, 0)])
    ids = make_shards(tmp_path / "shards", [[(40, 60)]])
    write_label(tmp_path / "labels", ids[0], np.ones((40, 60)))
    for name, value in (("HYPERSIM_ROOT", "hypersim"), ("VKITTI_ROOT", "vkitti"), ("REAL_IMAGES", "shards"),
                        ("REAL_LABELS", "labels"), ("NYU_ROOT", "nyu")):
        monkeypatch.setenv(name, str(tmp_path / value))
    datasets = build_datasets(load_config(Path(DEBUG).with_name("fiffdepth_sd2.yaml")))
    assert [type(d).__name__ for d in datasets["synthetic"]] == ["HypersimDataset", "VKittiDataset"]
    assert datasets["synthetic"][0].size == (480, 640) and datasets["synthetic"][1].size == (352, 1216)
    assert type(datasets["real"][0]).__name__ == "RealPhotosDataset" and len(datasets["real"][0]) == 1


def test_the_logged_learning_rate_is_the_one_each_step_used(tmp_path, monkeypatch):
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    from train.telemetry import Telemetry

    used, logged = [], []
    monkeypatch.setattr(Telemetry, "step", lambda self, step, terms: logged.append((step, terms["lr"])))
    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: used.append(opt.param_groups[0]["lr"]))
    try:
        run(tmp_path / "run", 2, "train.checkpoint_every=10", "validation.every=10")
    finally:
        handle.remove()
    factor = lr_factor({"warmup_steps": 10, "decay_steps": 400, "final_lr_fraction": 0.01})  # debug.yaml
    assert used == pytest.approx([1e-3 * factor(k) for k in range(2)])  # 1e-4, 2e-4 in the warm-up
    assert logged == [(k + 1, lr) for k, lr in enumerate(used)]
