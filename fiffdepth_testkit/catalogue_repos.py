"""Tiny seeded stand-ins for the catalogue's repositories, in the layouts their authors publish.

Each folder holds what the real repository holds at its pinned commit, text encoder, tokenizer and extras included
(the downloader must fetch none of them), with tiny random weights whose cross-attention is SD2's width (1024), so
the SD2 empty-prompt embedding shipped with FiffDepth conditions them as it conditions the real models. The served
text encoder is a tiny 32-wide one: a download that fetched it would fail to load, a canary for the minimal file set.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from fiffdepth_core.weights.catalogue import CATALOGUE, CatalogueModel

from .models import (TINY_TEXT_CONFIG, TINY_UNET_CONFIG, TINY_VAE_CONFIG, random_text_encoder, random_unet, random_vae,
                     write_minimal_clip_tokenizer)

DDIM = {"_class_name": "DDIMScheduler", "clip_sample": False, "num_train_timesteps": 1000, "set_alpha_to_one": False,
        "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None, "beta_start": 0.00085, "beta_end": 0.012,
        "beta_schedule": "scaled_linear"}
SCHEDULERS = {
    "lotus-d": {**DDIM, "prediction_type": "sample", "timestep_spacing": "leading"},
    "lotus-d-disparity": {"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
                          "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
                          "skip_prk_steps": True, "steps_offset": 1, "set_alpha_to_one": False},
    "marigold-e2e-ft": {**DDIM, "prediction_type": "v_prediction", "timestep_spacing": "trailing"},
}
PIPELINES = {"lotus-d": "LotusDPipeline", "lotus-d-disparity": "DirectRegressionPipeline",
             "marigold-e2e-ft": "StableDiffusionPipeline", "genpercept": "GenPerceptPipeline"}


def tiny_unet_config(family: str) -> dict:
    config = copy.deepcopy(TINY_UNET_CONFIG)
    config["cross_attention_dim"] = 1024  # SD2's: the shipped embedding fits
    if family.startswith("lotus-d"):
        config.update(class_embed_type="projection", projection_class_embeddings_input_dim=4)
    if family == "marigold-e2e-ft":
        config["in_channels"] = 8
    return config


def _json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def write_repo(model: CatalogueModel, folder: str | Path, seed: int = 100) -> Path:
    """The repository of ``model`` at its pinned commit, in miniature."""
    folder = Path(folder)
    unet_dir = next(f.split("/")[0] for f in model.files if f.endswith("diffusion_pytorch_model.safetensors")
                    and not f.startswith("vae/"))
    random_unet(tiny_unet_config(model.family), seed).save_pretrained(folder / unet_dir)
    random_vae(TINY_VAE_CONFIG, seed + 1).save_pretrained(folder / "vae")
    random_text_encoder(TINY_TEXT_CONFIG, seed + 2).save_pretrained(folder / "text_encoder")
    write_minimal_clip_tokenizer(folder / "tokenizer", TINY_TEXT_CONFIG["vocab_size"])
    index = {"_class_name": PIPELINES[model.family], "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"]}
    if model.family in SCHEDULERS:
        _json(folder / "scheduler" / "scheduler_config.json", SCHEDULERS[model.family])
        index["scheduler"] = ["diffusers", SCHEDULERS[model.family]["_class_name"]]
    _json(folder / "model_index.json", index)
    (folder / "README.md").write_text(f"---\nlicense: {model.licence}\n---\n# {model.title} (tiny test stand-in)\n")
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    if model.family == "genpercept":
        (folder / "LICENSE.txt").write_text("BSD 2-Clause License (test stand-in)\n")
    if model.family in ("genpercept", "marigold-e2e-ft"):
        (folder / "vae" / ".DS_Store").write_bytes(b"\0" * 6150)  # junk the real repositories carry
    missing = [f for f in model.files if not (folder / f).is_file()]
    if missing:
        raise AssertionError(f"the stand-in for {model.id} lacks {missing}")
    return folder


def serve_catalogue(hub, root: str | Path, models=CATALOGUE, seed: int = 100) -> dict[str, Path]:
    """Write every stand-in under ``root`` and serve it on ``hub`` under its real id and pinned commit."""
    written = {}
    for i, model in enumerate(models):
        folder = write_repo(model, Path(root) / model.id, seed + 10 * i)
        hub.add_folder(model.repo, model.revision, folder)
        written[model.id] = folder
    return written
