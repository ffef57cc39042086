"""Tiny seeded checkpoints in the layouts the Lotus-D, GenPercept and Marigold-E2E-FT authors publish.

* Lotus-D (``jingheya/lotus-depth-d-*``): a diffusers pipeline folder whose ``model_index.json`` names
  ``LotusDPipeline``; the UNet has a 4-wide projection class embedding.
* Marigold-E2E-FT (``GonzaloMG/marigold-e2e-ft-depth``): a diffusers folder with an 8-channel UNet and the published
  DDIM scheduler config (trailing spacing, v-prediction, scaled-linear SD2 betas).
* GenPercept (``guangkaixu/genpercept-models``): ``model_index.json`` naming ``GenPerceptPipeline``, ``vae/`` and
  UNets in ``unet_<task>_v2/`` folders; no text encoder (the README has users copy SD2.1's in) and no scheduler (the
  official code reads the beta-1 config from its repository; ``with_scheduler`` writes that config as well).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from fiffdepth_testkit.models import (TINY_TEXT_CONFIG, TINY_UNET_CONFIG, TINY_VAE_CONFIG,
                                    random_text_encoder, random_unet, random_vae, write_minimal_clip_tokenizer)

DDIM_COMMON = {"_class_name": "DDIMScheduler", "clip_sample": False, "num_train_timesteps": 1000,
               "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None}
E2E_FT_SCHEDULER = {**DDIM_COMMON, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                    "prediction_type": "v_prediction", "timestep_spacing": "trailing"}
MARIGOLD_V1_SCHEDULER = {**E2E_FT_SCHEDULER, "timestep_spacing": "leading"}  # prs-eth/marigold-depth-v1-0
GENPERCEPT_SCHEDULER = {**DDIM_COMMON, "beta_start": 1.0, "beta_end": 1.0, "beta_schedule": "scaled_linear",
                        "prediction_type": "v_prediction", "timestep_spacing": "leading"}
LOTUS_SCHEDULER = {**DDIM_COMMON, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                   "prediction_type": "sample", "timestep_spacing": "leading"}


def _text(folder: Path, seed: int) -> None:
    random_text_encoder(TINY_TEXT_CONFIG, seed).save_pretrained(folder / "text_encoder")
    write_minimal_clip_tokenizer(folder / "tokenizer", TINY_TEXT_CONFIG["vocab_size"])


def _json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def unet_config(**changes) -> dict:
    config = copy.deepcopy(TINY_UNET_CONFIG)
    config.update(changes)
    return config


def write_lotus(folder, seed: int = 10) -> Path:
    folder = Path(folder)
    random_unet(unet_config(class_embed_type="projection", projection_class_embeddings_input_dim=4),
               seed).save_pretrained(folder / "unet")
    random_vae(TINY_VAE_CONFIG, seed + 1).save_pretrained(folder / "vae")
    _text(folder, seed + 2)
    _json(folder / "scheduler" / "scheduler_config.json", LOTUS_SCHEDULER)
    _json(folder / "model_index.json", {"_class_name": "LotusDPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
                                        "vae": ["diffusers", "AutoencoderKL"],
                                        "scheduler": ["diffusers", "DDIMScheduler"],
                                        "text_encoder": ["transformers", "CLIPTextModel"],
                                        "tokenizer": ["transformers", "CLIPTokenizer"]})
    return folder


def write_e2e_ft(folder, seed: int = 20, scheduler: dict = E2E_FT_SCHEDULER) -> Path:
    folder = Path(folder)
    random_unet(unet_config(in_channels=8), seed).save_pretrained(folder / "unet")
    random_vae(TINY_VAE_CONFIG, seed + 1).save_pretrained(folder / "vae")
    _text(folder, seed + 2)
    _json(folder / "scheduler" / "scheduler_config.json", scheduler)
    _json(folder / "model_index.json", {"_class_name": "StableDiffusionPipeline",
                                        "unet": ["diffusers", "UNet2DConditionModel"],
                                        "vae": ["diffusers", "AutoencoderKL"],
                                        "scheduler": ["diffusers", "DDIMScheduler"]})
    return folder


def write_genpercept(folder, seed: int = 30, unets=("unet_depth_v2",), with_index: bool = True,
                     with_scheduler: bool = False) -> Path:
    folder = Path(folder)
    for i, name in enumerate(unets):
        random_unet(unet_config(), seed + 10 * i).save_pretrained(folder / name)
    random_vae(TINY_VAE_CONFIG, seed + 1).save_pretrained(folder / "vae")
    _text(folder, seed + 2)
    if with_index:
        _json(folder / "model_index.json", {"_class_name": "GenPerceptPipeline",
                                            "unet": ["diffusers", "UNet2DConditionModel"],
                                            "vae": ["diffusers", "AutoencoderKL"]})
    if with_scheduler:
        _json(folder / "scheduler" / "scheduler_config.json", GENPERCEPT_SCHEDULER)
    return folder
