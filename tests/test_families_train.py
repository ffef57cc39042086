"""Evaluation and fine-tuning from the other families' checkpoints (train/evaluate.py, train/finetune.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from family_checkpoints import write_e2e_ft, write_lotus

from fiffdepth_core.method.predictor import PredictConfig, predict_depth
from fiffdepth_core.weights.checkpoint import inspect_checkpoint, load_standalone
from fiffdepth_core.weights.layout import CheckpointError
from fiffdepth_testkit.images import seeded_images
from train.finetune import main as finetune

DEBUG = str(Path(__file__).resolve().parents[1] / "train" / "configs" / "debug.yaml")
FAST = ["model.vae_warmup.steps=0", "data.size=[32,32]", "train.batch_size=2", "validation.max_images=2",
        "validation.every=2", "train.checkpoint_every=2", "train.trackers=[]", "export.single_file=true"]


def fine_tune(base: Path, out: Path, steps: int = 2) -> dict:
    argv = ["--config", DEBUG, "--output-dir", str(out), "--log-level", "WARNING"]
    sets = FAST + [f"train.max_steps={steps}", f"model.pretrained={base}", "model.random_geometry=null"]
    return finetune(argv + [f"--set={s}" for s in sets])


def fiffdepth_pass_with_lotus_label(folder: Path, images: torch.Tensor) -> torch.Tensor:
    """FiffDepth's t = 0 pass and decode, written on diffusers, with Lotus' depth label on the UNet call."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import load_file

    unet = UNet2DConditionModel.from_pretrained(folder / "unet").eval()
    vae = AutoencoderKL.from_pretrained(folder / "vae").eval()
    embed = load_file(str(folder / "empty_text_embed.safetensors"))["empty_text_embed"]
    label = torch.tensor([[1.0, 0.0]])
    label = torch.cat([torch.sin(label), torch.cos(label)], dim=-1)
    with torch.no_grad():
        latent = vae.encode(images * 2 - 1).latent_dist.mean * 0.18215
        d0 = unet(latent, torch.zeros(1, dtype=torch.long), encoder_hidden_states=embed, class_labels=label).sample
        decoded = vae.decode(d0 / 0.18215).sample
    return (decoded.mean(dim=1).clamp(-1, 1) + 1) / 2


@pytest.mark.slow  # a training run
def test_lotus_d_fine_tuned_with_fiffdepth_objective_becomes_a_fiffdepth_model(tmp_path):
    base = write_lotus(tmp_path / "lotus-depth-d-v1-0")
    result = fine_tune(base, tmp_path / "run")
    assert all(torch.isfinite(torch.tensor(result["losses"])))
    export = tmp_path / "run" / "export"
    for exported in (export, export / "fiffdepth.safetensors"):  # both exports say what they hold
        assert inspect_checkpoint(exported).family.name == "fiffdepth-lotus"
    assert json.loads((export / "unet" / "config.json").read_text())["class_embed_type"] == "projection"
    images = seeded_images(1, 64, 64, seed=3)
    with torch.inference_mode():
        ours = predict_depth(load_standalone(export), images, PredictConfig(processing_resolution=0))
    assert (ours - fiffdepth_pass_with_lotus_label(export, images)).abs().max().item() <= 1e-5
    trained, start = load_standalone(export).unet, load_standalone(base).unet
    assert max((a - b).abs().max().item() for a, b in zip(trained.parameters(), start.parameters())) > 0


def test_fine_tuning_refuses_an_eight_channel_unet(tmp_path):
    base = write_e2e_ft(tmp_path / "marigold-e2e-ft-depth")
    with pytest.raises(Exception, match="cannot start from a UNet with 8 input channels"):
        fine_tune(base, tmp_path / "run", steps=1)


def test_evaluate_scores_a_family_checkpoint_with_its_own_inference(tmp_path):
    from test_evaluate import direct_metrics, make_nyu

    from train import evaluate

    root = tmp_path / "nyu"
    root.mkdir()
    split = make_nyu(root)
    lotus = write_lotus(tmp_path / "lotus-depth-d-v1-0")
    out = tmp_path / "out"
    assert evaluate.main(["--dataset", "nyuv2", "--data-root", str(root), "--split", str(split), "--output-dir",
                          str(out), "--no-progress", "--checkpoint", str(lotus)]) == 0
    results = json.loads((out / "results.json").read_text())
    direct = direct_metrics(load_standalone(lotus), root)
    assert results["metrics"]["abs_rel"] == pytest.approx(sum(r["abs_rel"] for r in direct) / len(direct), rel=1e-5)
    with pytest.raises(CheckpointError, match="family 'marigold-e2e-ft' needs"):
        evaluate.main(["--dataset", "nyuv2", "--data-root", str(root), "--split", str(split), "--output-dir",
                       str(tmp_path / "out2"), "--no-progress", "--checkpoint", str(lotus), "--family",
                       "marigold-e2e-ft"])
