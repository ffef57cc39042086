"""A LoRA fine-tune's two exports inside a real ComfyUI: the LoRA file, applied to the base UNet by ComfyUI's own
LoRA loader (core ``LoraLoaderModelOnly``), gives the merged checkpoint's depth through FiffDepth Estimate.

Skipped unless COMFYUI_PATH points at a ComfyUI checkout (0.3.64 here) whose requirements, plus this trainer's
(accelerate, peft, pyyaml), are installed in the Python running the tests: the LoRA is trained in-process, then a
headless ComfyUI server runs both graphs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from comfy_host import comfy_server, post_prompt, requires_comfyui, wait_for
from PIL import Image

from fiffdepth_testkit.images import seeded_images

pytestmark = [pytest.mark.comfyui, pytest.mark.slow, requires_comfyui]

DEBUG = str(Path(__file__).resolve().parents[1] / "train" / "configs" / "debug.yaml")
TOL = 1e-4  # two fp32 paths: ComfyUI patches W + alpha/rank * up @ down at load, the export adds peft's delta


def train_lora(out: Path) -> None:
    pytest.importorskip("peft")
    pytest.importorskip("accelerate")
    from train.finetune import main

    sets = ["model.vae_warmup.steps=0", "data.size=[32,32]", "train.batch_size=2", "train.max_steps=3",
            "validation.every=10", "train.checkpoint_every=10", "train.trackers=[]", "export.single_file=false",
            "train.lora.enabled=true", "train.lora.rank=4", "train.lora.alpha=8", "optim.lr=3.0e-2",
            "train.lora.target_modules=[to_q, to_k, to_v, to_out.0, proj_in, proj_out]"]
    main(["--config", DEBUG, "--output-dir", str(out), "--log-level", "WARNING"] + [f"--set={s}" for s in sets])


def estimate(loader: str, model_source: list) -> dict:
    return {"class_type": "FiffDepthEstimate", "inputs": {
        "model": model_source, "vae": [loader, 1], "image": ["1", 0], "conditioning": [loader, 2],
        "processing_resolution": 0, "batch_size": 1, "depth_pass": "detailed", "normalization": "per_image",
        "vae_tiling": "off", "temporal": "off"}}


def test_core_lora_loader_on_the_base_unet_equals_the_merged_checkpoint(tmp_path):
    train_lora(tmp_path / "run")
    models = tmp_path / "models"
    shutil.copytree(tmp_path / "run" / "base_model", models / "fiffdepth" / "base")
    shutil.copytree(tmp_path / "run" / "export", models / "fiffdepth" / "merged",
                    ignore=shutil.ignore_patterns("fiffdepth_lora.safetensors"))
    (models / "loras").mkdir(parents=True)
    shutil.copy(tmp_path / "run" / "export" / "fiffdepth_lora.safetensors", models / "loras")
    (tmp_path / "input").mkdir()
    pixels = (seeded_images(1, 64, 96, seed=5)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "input" / "photo.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "2": {"class_type": "FiffDepthLoader", "inputs": {"model_name": "base", "precision": "fp32"}},
        "3": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["2", 0],
                                                              "lora_name": "fiffdepth_lora.safetensors",
                                                              "strength_model": 1.0}},
        "4": estimate("2", ["3", 0]),
        "5": {"class_type": "FiffDepthSave", "inputs": {"depth": ["4", 1], "filename_prefix": "lora/depth",
                                                         "format": "npy"}},
        "6": {"class_type": "FiffDepthLoader", "inputs": {"model_name": "merged", "precision": "fp32"}},
        "7": estimate("6", ["6", 0]),
        "8": {"class_type": "FiffDepthSave", "inputs": {"depth": ["7", 1], "filename_prefix": "merged/depth",
                                                         "format": "npy"}},
        "9": estimate("2", ["2", 0]),
        "10": {"class_type": "FiffDepthSave", "inputs": {"depth": ["9", 1], "filename_prefix": "base/depth",
                                                          "format": "npy"}},
    }
    with comfy_server(tmp_path, timeout=300) as url:
        status, body = post_prompt(url, prompt)
        assert status == 200, body
        wait_for(url, body["prompt_id"])
    with_lora, merged, base = (np.load(tmp_path / "output" / name / "depth_00001_.npy")
                               for name in ("lora", "merged", "base"))
    assert with_lora.shape == merged.shape == (64, 96)
    assert np.abs(with_lora - merged).max() <= TOL
    assert np.abs(base - merged).max() > 100 * TOL  # the LoRA changes the depth: the loader really applied it
