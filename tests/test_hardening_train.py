"""Hostile run folders and configs: no code from checkpoint files, strict configs, a lock, atomic exports."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import pytest
import torch

from train.config import ConfigError, load_config
from train.finetune import main

DEBUG = str(Path(__file__).resolve().parents[1] / "train" / "configs" / "debug.yaml")
FAST = ["model.vae_warmup.steps=0", "data.size=[32,32]", "train.batch_size=2", "validation.max_images=2",
        "validation.every=2", "train.checkpoint_every=2", "train.trackers=[]", "export.single_file=false"]
# Every pickle file accelerate's save_state writes (model weights aside, which it writes as safetensors).
ACCELERATE_PICKLES = ("optimizer.bin", "scheduler.bin", "custom_checkpoint_0.pkl", "random_states_0.pkl",
                      "pytorch_model.bin", "scaler.pt")


def run(out: Path, steps: int, *extra: str, resume: bool = False) -> dict:
    argv = ["--config", DEBUG, "--output-dir", str(out), "--log-level", "WARNING"]
    argv += [f"--set={s}" for s in FAST + [f"train.max_steps={steps}", *extra]]
    return main(argv + (["--resume", "latest"] if resume else []))


class Payload:
    """Unpickling this creates ``marker``: proof that a loader ran code from a file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step run folder with EMA (so every kind of training state is saved)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    run(out, 2, "train.ema.enabled=true")
    return out


def _copy(trained: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "run"
    shutil.copytree(trained, target)
    (target / ".lock").unlink(missing_ok=True)
    return target


@pytest.mark.slow  # training runs
def test_checkpoints_hold_no_pickle_capable_file(trained):
    names = sorted(p.name for p in (trained / "checkpoints" / "step-00000002").iterdir())
    assert names == ["ema.safetensors", "model.safetensors", "optimizer.safetensors", "rng_0.safetensors",
                     "scheduler.json", "trainer.json"]


@pytest.mark.slow  # training runs
def test_resume_refuses_planted_pickles_and_never_runs_them(trained, tmp_path):
    folder = _copy(trained, tmp_path)
    checkpoint = folder / "checkpoints" / "step-00000002"
    marker = tmp_path / "payload-ran"
    for name in ACCELERATE_PICKLES:  # every file a pickle-based trainer would read on resume
        (checkpoint / name).write_bytes(pickle.dumps(Payload(marker)))
    error = _resume_error(folder)
    assert not marker.exists(), "resume ran code from a planted pickle"
    assert isinstance(error, ValueError) and re.search(r"optimizer\.bin.*in a pickle format that can run code",
                                                         str(error))


def _resume_error(folder: Path) -> BaseException | None:
    try:
        run(folder, 4, "train.ema.enabled=true", resume=True)
    except Exception as err:  # noqa: BLE001 - the payload check comes first, the error's kind after
        return err
    return None


@pytest.mark.slow  # training runs
def test_resume_from_files_replaced_by_pickles_fails_cleanly_without_running_them(trained, tmp_path):
    folder = _copy(trained, tmp_path)
    checkpoint = folder / "checkpoints" / "step-00000002"
    marker = tmp_path / "payload-ran"
    blob = pickle.dumps(Payload(marker))
    for path in sorted(checkpoint.iterdir()):
        if path.name != "trainer.json":
            original = path.read_bytes()
            path.write_bytes(blob)
            error = _resume_error(folder)
            assert not marker.exists(), f"resume ran code from {path.name}"
            assert isinstance(error, ValueError) and re.search(f"cannot resume.*{path.name}", str(error)), error
            path.write_bytes(original)
    (checkpoint / "trainer.json").write_bytes(blob)
    error = _resume_error(folder)
    assert not marker.exists() and isinstance(error, ValueError) and "trainer.json" in str(error)


def test_typo_in_a_key_is_an_error_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config key `train\.max_step` \(did you mean `train\.max_steps`"):
        load_config(DEBUG, ["train.max_step=3"])
    with pytest.raises(ConfigError, match=r"`optim\.lrate`.*did you mean `optim\.lr`"):
        load_config(DEBUG, ["optim.lrate=0.1"])


def test_exponent_numbers_without_a_dot_are_numbers(tmp_path):
    assert load_config(DEBUG, ["optim.lr=1e-3"])["optim"]["lr"] == 0.001
    config = tmp_path / "c.yaml"
    config.write_text(f"base_config: [{DEBUG}]\noptim: {{lr: 5e-4, eps: 1E-8}}\n")
    loaded = load_config(config)
    assert loaded["optim"]["lr"] == 0.0005 and loaded["optim"]["eps"] == 1e-8


@pytest.mark.parametrize("override, message", [
    ("optim.warmup_steps=abc", r"`optim\.warmup_steps` must be an integer, got 'abc'"),
    ("optim.decay_steps=400.5", r"`optim\.decay_steps` must be an integer, got 400\.5"),
    ("loss.gamma=high", r"`loss\.gamma` must be a number, got 'high'"),
    ("train.ema.decay=[1]", r"`train\.ema\.decay` must be a number"),
    ("train.gradient_checkpointing=3", r"`train\.gradient_checkpointing` must be true or false"),
    ("optim.betas=0.9", r"`optim\.betas` must be a list"),
    ("train.ema=on", r"`train\.ema` must be a mapping"),
    ("optim.final_lr_fraction='0.1'", r"`optim\.final_lr_fraction` must be a number, got '0\.1'"),
])
def test_every_type_is_checked_with_one_clear_error(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DEBUG, [override])


@pytest.mark.slow  # training runs
def test_a_failed_start_leaves_a_folder_a_plain_rerun_can_use(tmp_path):
    out = tmp_path / "run"
    (tmp_path / "not-a-checkpoint").mkdir()
    with pytest.raises(ValueError, match="not-a-checkpoint"):
        run(out, 1, "model.random_geometry=null", f"model.pretrained={tmp_path / 'not-a-checkpoint'}")
    assert not (out / "config.yaml").exists()
    with pytest.raises(ValueError, match="does-not-exist"):
        run(out, 1, f"data.real=[{{type: procedural_real, length: 4, seed: 1}}, "
                    f"{{type: rgbd_folder, root: {tmp_path}/does-not-exist}}]")
    assert not (out / "config.yaml").exists()
    assert len(run(out, 1)["losses"]) == 1  # a plain rerun starts the folder
    assert (out / "config.yaml").is_file()


@pytest.mark.slow  # training runs
def test_a_second_run_on_a_held_folder_stops_naming_the_holder(tmp_path):
    from train.run_folder import RunFolder, RunFolderError

    holder = RunFolder(tmp_path / "run")
    holder.lock()
    try:
        with pytest.raises(RunFolderError, match=rf"in use by another training process \(pid {os.getpid()}\)"):
            run(tmp_path / "run", 1)
        assert not (tmp_path / "run" / "config.yaml").exists()
    finally:
        holder.unlock()
    assert len(run(tmp_path / "run", 1)["losses"]) == 1  # released: the folder is usable again


def test_a_crash_mid_export_keeps_the_previous_export_whole(tmp_path, monkeypatch):
    from fiffdepth_core.weights import export as export_module
    from fiffdepth_testkit.models import geometry_configs, random_unet, random_vae
    from train.run_folder import export_model

    unet_config, vae_config, _ = geometry_configs("tiny")
    unet, vae = random_unet(unet_config, seed=0), random_vae(vae_config, seed=0)
    embed = torch.randn(1, 2, unet_config["cross_attention_dim"])
    out = tmp_path / "run" / "export"
    export_model(unet, vae, embed, out, None, False, torch.float32)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(1.0)

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_module, "write_embedding", crash)  # fails after the UNet and VAE are written
    with pytest.raises(OSError):
        export_model(unet, vae, embed, out, None, False, torch.float32)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # the old export, whole: no UNet of one step beside a VAE of another
    assert sorted(p.name for p in out.parent.iterdir()) == ["export"]  # no temporary folder left behind
