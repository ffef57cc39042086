"""The recipe at Stable Diffusion 2's real size, on the CPU: random weights of SD2's geometry (nothing downloaded),
bf16 autocast, bf16 VAE, gradient checkpointing, accumulation, validation, checkpoints, export, and a resume from
the step-1 checkpoint, at a 64² crop. Uses about 16 GB of memory and 30 GB of disk for a few minutes.

bf16 needs a CPU with bf16 kernels (oneDNN's, on AVX-512 x86 or ARM): without them (AVX2-only x86) PyTorch runs
bf16 convolutions through a generic loop about 100x slower than fp32, and one real-size step takes hours. There
the run keeps every other setting of the recipe and computes in fp32.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from fiffdepth_core.fileio import TensorFileReader
from fiffdepth_core.method.predictor import PredictConfig, predict_depth
from fiffdepth_core.weights.checkpoint import inspect_checkpoint, load_standalone
from train.finetune import main

DEBUG = str(Path(__file__).resolve().parents[1] / "train" / "configs" / "debug.yaml")


def fast_bf16() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


PRECISION = (["train.mixed_precision=bf16", "train.vae_dtype=bf16"] if fast_bf16()
             else ['train.mixed_precision="no"', "train.vae_dtype=fp32"])  # quoted: YAML reads no as false
RECIPE_AT_64 = ["model.random_geometry=sd2", "model.vae_warmup.steps=0", "data.size=[64,64]", *PRECISION,
                "train.gradient_checkpointing=true",
                "train.batch_size=1", "train.grad_accum=2", "train.checkpoint_every=1", "train.keep_checkpoints=1",
                "validation.every=1", "validation.max_images=1", "validation.log_images=0", "train.trackers=[]",
                "export.single_file=false"]


def train(out: Path, steps: int, resume: bool = False) -> dict:
    argv = ["--config", DEBUG, "--output-dir", str(out), "--log-level", "WARNING"]
    argv += [f"--set={s}" for s in RECIPE_AT_64 + [f"train.max_steps={steps}"]]
    return main(argv + (["--resume", "latest"] if resume else []))


def predicts(folder: Path) -> torch.Tensor:
    backbone = load_standalone(folder)
    with torch.inference_mode():
        depth = predict_depth(backbone, torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0)),
                              PredictConfig(processing_resolution=0))
    assert depth.shape == (1, 64, 96) and torch.isfinite(depth).all()
    return depth


def no_phase_above_training(memory: dict) -> None:
    """Exports and checkpoints stream from the live weights: no phase holds a second copy of the model."""
    peaks = memory["peak_resident_gb"]
    assert set(peaks) == {"load", "train", "validate", "checkpoint", "export"}
    for phase, peak in peaks.items():
        assert peak <= peaks["train"] + 1.5, (phase, peaks)


@pytest.mark.slow
def test_the_real_size_recipe_trains_validates_exports_and_resumes(tmp_path):
    run = tmp_path / "run"
    first = train(run, 1)
    assert len(first["losses"]) == 1 and first["losses"][0] > 0
    assert first["state"]["best_step"] == 1
    info = inspect_checkpoint(run / "export")
    assert info.unet_config["block_out_channels"] == [320, 640, 1280, 1280]
    assert tuple(load_standalone(run / "export").empty_embed.shape) == (1, 2, 1024)
    trained = predicts(run / "export")
    base = predicts(run / "base_model")
    assert (trained - base).abs().max() > 0  # one step moved the UNet
    # the VAE is frozen (in bf16 with the recipe) and exported from the base model's files: unrounded fp32
    exported = TensorFileReader(run / "export" / "vae" / "diffusion_pytorch_model.safetensors")
    with safe_open(str(run / "base_model" / "vae" / "diffusion_pytorch_model.safetensors"), "pt") as stored:
        for key in stored.keys():
            assert torch.equal(exported.get(key), stored.get_tensor(key)), key
    no_phase_above_training(first["memory"])
    shutil.rmtree(run / "export")  # disk: the resumed run writes its own
    shutil.rmtree(run / "best")

    second = train(run, 2, resume=True)
    assert len(second["losses"]) == 1  # step 2 only: resumed from the step-1 checkpoint
    checkpoints = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
    assert checkpoints == ["step-00000002"]
    assert json.loads((run / "checkpoints" / "step-00000002" / "trainer.json").read_text())["step"] == 2
    optimizer = TensorFileReader(run / "checkpoints" / "step-00000002" / "optimizer.safetensors")
    steps = [optimizer.get(k).item() for k in optimizer.keys() if k.endswith(".step")]
    assert steps and set(steps) == {2.0}  # AdamW's counters continued from the checkpoint, not from scratch
    predicts(run / "export")
    no_phase_above_training(second["memory"])
    shutil.rmtree(run)  # ~10 GB of real-size weights and checkpoints: pytest keeps the last three runs' tmp_path
