"""The model families inside a real ComfyUI: the pack's nodes on host MODEL/VAE objects, and core's own Lotus-D.

* In-process (tiny checkpoints in the official layouts): FiffDepthLoader -> FiffDepthEstimate equals each family's
  official inference (tests/family_reference.py) to 1e-5 in fp32 at native resolution.
* Through a headless server's ``/prompt`` (slow): on a Lotus-D UNet of the real SD2 geometry with random weights,
  FiffDepthLoader -> FiffDepthDepthLatent gives the latent core's Lotus workflow gives (UNETLoader,
  LotusConditioning, BasicScheduler + SetFirstSigma 999, DisableNoise, SamplerCustomAdvanced) to 1e-4 in fp32.

Skipped unless COMFYUI_PATH points at a ComfyUI checkout whose requirements are installed in this Python.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from comfy_host import comfy_server, import_comfy, post_prompt, requires_comfyui, wait_for
from family_checkpoints import write_e2e_ft, write_genpercept, write_lotus
from family_reference import genpercept, lotus_d, marigold_e2e_ft

from fiffdepth_testkit.images import seeded_images

pytestmark = [pytest.mark.comfyui, requires_comfyui]
TOL = 1e-5


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_families")
    models = base / "models"
    dirs = {"lotus": write_lotus(models / "fam-lotus-depth-d"),
            "e2e": write_e2e_ft(models / "fam-marigold-e2e-ft-depth"),
            "genpercept": write_genpercept(models / "fam-genpercept", unets=("unet_depth_v2",))}
    return import_comfy(models, base / "output"), dirs


def uint8_images(batch, height, width, seed):
    return (seeded_images(batch, height, width, seed=seed) * 255).round().to(torch.uint8)


def host_depth(nodes, name, images_uint8, family="auto"):
    mapping = nodes.NODE_CLASS_MAPPINGS
    with torch.inference_mode():
        model, vae, cond = mapping["FiffDepthLoader"].execute(model_name=name, precision="fp32", family=family).args
        _, depth = mapping["FiffDepthEstimate"].execute(
            model=model, vae=vae, image=images_uint8.float().div(255).movedim(1, -1), conditioning=cond,
            processing_resolution=0, batch_size=1).args
    return depth, model


@pytest.mark.parametrize("key,reference,family", [("lotus", lotus_d, "lotus-d"),
                                                  ("e2e", marigold_e2e_ft, "marigold-e2e-ft"),
                                                  ("genpercept", genpercept, "genpercept")])
def test_host_runs_each_family_like_its_authors(host, key, reference, family):
    nodes, dirs = host
    images = uint8_images(2, 64, 128, seed=11)
    depth, model = host_depth(nodes, dirs[key].name, images)
    assert model.model.fiffdepth_family.name == family
    ref = reference(dirs[key], images)
    assert depth.shape == ref.shape
    assert (depth - ref).abs().max().item() <= TOL
    assert ref.std() > 0.01


def test_loader_family_option_overrides_detection(host):
    nodes, dirs = host
    images = uint8_images(1, 64, 64, seed=12)
    depth, model = host_depth(nodes, dirs["lotus"].name, images, family="lotus-d-disparity")
    assert model.model.fiffdepth_family.name == "lotus-d-disparity"
    assert (depth - (1 - lotus_d(dirs["lotus"], images))).abs().max().item() <= TOL
    with pytest.raises(ValueError, match="family 'marigold-e2e-ft' needs a UNet with 8 input"):
        host_depth(nodes, dirs["lotus"].name, images, family="marigold-e2e-ft")


def test_depth_latent_node_equals_the_standalone_depth_latent(host):
    from fiffdepth_core.method.predictor import predict_depth_latent
    from fiffdepth_core.weights.checkpoint import load_standalone

    nodes, dirs = host
    mapping = nodes.NODE_CLASS_MAPPINGS
    images = seeded_images(1, 64, 64, seed=13)
    backbone = load_standalone(dirs["e2e"])
    with torch.inference_mode():
        latent = backbone.encode(images * 2 - 1)  # [1,4,8,8], scaled
        expected = predict_depth_latent(backbone, latent) / backbone.latent_scale
        model, _, cond = mapping["FiffDepthLoader"].execute(model_name=dirs["e2e"].name, precision="fp32").args
        (out,) = mapping["FiffDepthDepthLatent"].execute(model=model, latent={"samples": latent / 0.18215},
                                                         conditioning=cond).args
    assert (out["samples"] - expected).abs().max().item() <= TOL


# --- core's Lotus-D against the pack, through /prompt ------------------------------------------------------------


def write_sd2_lotus(folder, seed=0):
    """A Lotus-D UNet of SD2's geometry with random weights (fp16 on disk), an SD2 VAE, and a stand-in embedding.

    The attention head layout is the one this ComfyUI's own detection builds for a diffusers Lotus-D file (0.3.6x:
    8 heads per block; later versions: 64-wide heads, as SD2 and the published Lotus-D checkpoints), so that both
    sides compute the same network (see the README's note on older ComfyUI versions).
    """
    import sys
    from pathlib import Path

    from comfy_host import COMFYUI_PATH

    root = str(Path(COMFYUI_PATH).resolve())
    if root not in sys.path:
        sys.path.insert(0, root)  # ComfyUI's root first, as import_comfy does
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import comfy.model_detection
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file

    from fiffdepth_core.weights.sd2_configs import SD2_UNET_CONFIG, SD2_VAE_CONFIG

    config = dict(SD2_UNET_CONFIG, class_embed_type="projection", projection_class_embeddings_input_dim=4)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**config).half()
    state = {k: v.contiguous() for k, v in unet.state_dict().items()}
    core = comfy.model_detection.unet_config_from_diffusers_unet(state)
    assert core is not None and core["adm_in_channels"] == 4, "core does not detect this UNet as Lotus-D"
    if core.get("num_heads", -1) > 0:  # core builds a constant head count
        config["attention_head_dim"] = core["num_heads"]
    unet.register_to_config(attention_head_dim=config["attention_head_dim"])
    unet.save_pretrained(folder / "unet")
    del unet
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**SD2_VAE_CONFIG)
    vae.save_pretrained(folder / "vae")
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(folder.parent.parent / "vae" / "sd2.safetensors"))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "LotusDPipeline"}))
    save_file({"empty_text_embed": torch.zeros(1, 2, 1024)}, str(folder / "empty_text_embed.safetensors"))
    return state, core


@pytest.mark.slow
def test_core_lotus_workflow_and_the_pack_give_the_same_latent(tmp_path):
    from PIL import Image
    from safetensors.torch import load_file

    models = tmp_path / "models"
    for sub in ("fiffdepth", "diffusion_models", "vae"):
        (models / sub).mkdir(parents=True)
    folder = models / "fiffdepth" / "lotus-sd2"
    state, core = write_sd2_lotus(folder)
    (models / "diffusion_models" / "lotus-sd2.safetensors").symlink_to(folder / "unet" / "diffusion_pytorch_model.safetensors")
    del state
    (tmp_path / "input").mkdir()
    pixels = (seeded_images(1, 64, 64, seed=21)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "input" / "photo.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "2": {"class_type": "VAELoader", "inputs": {"vae_name": "sd2.safetensors"}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["1", 0], "vae": ["2", 0]}},
        "4": {"class_type": "UNETLoader", "inputs": {"unet_name": "lotus-sd2.safetensors", "weight_dtype": "default"}},
        "5": {"class_type": "LotusConditioning", "inputs": {}},
        "6": {"class_type": "BasicGuider", "inputs": {"model": ["4", 0], "conditioning": ["5", 0]}},
        "7": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "8": {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": "normal", "steps": 1,
                                                         "denoise": 1.0}},
        "9": {"class_type": "SetFirstSigma", "inputs": {"sigmas": ["8", 0], "sigma": 999.0}},
        "10": {"class_type": "DisableNoise", "inputs": {}},
        "11": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["10", 0], "guider": ["6", 0],
                                                                 "sampler": ["7", 0], "sigmas": ["9", 0],
                                                                 "latent_image": ["3", 0]}},
        "12": {"class_type": "SaveLatent", "inputs": {"samples": ["11", 0], "filename_prefix": "core/output"}},
        "13": {"class_type": "SaveLatent", "inputs": {"samples": ["11", 1], "filename_prefix": "core/denoised"}},
        "14": {"class_type": "FiffDepthLoader", "inputs": {"model_name": "lotus-sd2", "precision": "fp32",
                                                           "family": "auto"}},
        "15": {"class_type": "FiffDepthDepthLatent", "inputs": {"model": ["14", 0], "latent": ["3", 0],
                                                                "conditioning": ["5", 0], "depth_pass": "detailed"}},
        "16": {"class_type": "SaveLatent", "inputs": {"samples": ["15", 0], "filename_prefix": "pack/latent"}},
        "17": {"class_type": "FiffDepthDepthLatent", "inputs": {"model": ["4", 0], "latent": ["3", 0],
                                                                "conditioning": ["5", 0], "depth_pass": "detailed"}},
        "18": {"class_type": "SaveLatent", "inputs": {"samples": ["17", 0], "filename_prefix": "pack/on_core"}},
    }
    with comfy_server(tmp_path, timeout=300) as url:
        status, body = post_prompt(url, prompt)
        assert status == 200, body
        wait_for(url, body["prompt_id"], timeout=900)
    out = tmp_path / "output"
    read = {name: load_file(str(out / f"{name}_00001_.latent"))["latent_tensor"]
            for name in ("core/output", "core/denoised", "pack/latent", "pack/on_core")}
    assert read["pack/latent"].shape == (1, 4, 8, 8)
    figures = {name: (read["pack/latent"] - read[name]).abs().max().item()
               for name in ("core/output", "core/denoised", "pack/on_core")}
    print("core-Lotus comparison, max |diff| of the pack's latent vs:", figures, "core heads:",
          core.get("num_heads"), core.get("num_head_channels"))
    assert all(value <= 1e-4 for value in figures.values()), figures
    assert read["pack/latent"].std() > 0.01
