"""The pack inside a real ComfyUI: Loader -> Estimate -> Save in-process and through a headless server.

Skipped (with the reason) unless COMFYUI_PATH points at a ComfyUI checkout whose requirements are installed in
the Python running the tests.

Parity: the host path equals the standalone predictor to 1e-5 in fp32 (one image per model call; the measured
differences are in benchmarks/README.md) and exactly in fp64, which shows the plumbing (raw t=0 sampling patch, latent
scale, unclamped decode, padding) is exact. Batches of several images per call differ by fp32 summation order
(see test_host_resizes_pads_and_batches_like_standalone).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from comfy_host import PACK_ROOT, comfy_server, import_comfy, post_prompt, requires_comfyui, wait_for

from fiffdepth_core.method.postprocess import controlnet_depth
from fiffdepth_core.method.predictor import PredictConfig, predict_depth
from fiffdepth_core.weights.checkpoint import empty_embedding, inspect_checkpoint, load_standalone, load_state_dict
from fiffdepth_testkit.images import seeded_images
from fiffdepth_testkit.models import write_random_pipeline

pytestmark = [pytest.mark.comfyui, requires_comfyui]


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy")
    write_random_pipeline(base / "models" / "tiny", geometry="tiny", seed=0)
    nodes = import_comfy(base / "models", base / "output")
    return nodes, base


def standalone_depth(checkpoint, images, **config):
    backbone = load_standalone(checkpoint, dtype=torch.float32)
    with torch.inference_mode():
        return predict_depth(backbone, images, PredictConfig(**config))


def run_host(nodes, images, **estimate):
    mapping = nodes.NODE_CLASS_MAPPINGS
    with torch.inference_mode():
        model, vae, cond = mapping["FiffDepthLoader"].execute(model_name="tiny", precision="fp32").args
        return mapping["FiffDepthEstimate"].execute(model=model, vae=vae, image=images.movedim(1, -1),
                                                    conditioning=cond, **estimate).args


def test_pack_registers_its_nodes_and_folders(host):
    nodes, _ = host
    import folder_paths

    for node_id in ("FiffDepthLoader", "FiffDepthEstimate", "FiffDepthSave", "FiffDepthColorize"):
        assert node_id in nodes.NODE_CLASS_MAPPINGS
    assert "tiny" in nodes.NODE_CLASS_MAPPINGS["FiffDepthLoader"].define_schema().inputs[0].options
    assert any(p.endswith("geometry_estimation") for p in folder_paths.get_folder_paths("geometry_estimation"))


@pytest.mark.parametrize("geometry", ["sd2", "tiny"])
def test_unet_config_translation_matches_comfyui_detection(host, geometry):
    """The loader's config (the shared core translation + ComfyUI's extras) equals what ComfyUI itself detects
    from the same diffusers weights (shapes only: the UNet is built on the meta device)."""
    import comfy.model_detection
    from diffusers import UNet2DConditionModel

    from fiffdepth_testkit.models import geometry_configs

    unet_config = geometry_configs(geometry)[0]
    with torch.device("meta"):
        state_dict = UNet2DConditionModel(**unet_config).state_dict()
    detected = comfy.model_detection.unet_config_from_diffusers_unet(state_dict)
    ours = pack_module("host_models").comfy_unet_config(unet_config)
    if detected is None:  # ComfyUI only knows a fixed list of geometries (the tiny one is not among them)
        assert geometry == "tiny"
        return
    detected.pop("dtype", None)
    common = set(detected) & set(ours)
    assert {k: ours[k] for k in common} == {k: detected[k] for k in common}
    assert common >= {"model_channels", "channel_mult", "num_res_blocks", "transformer_depth",
                      "transformer_depth_output", "context_dim", "num_head_channels", "use_linear_in_transformer"}


FP32_TOL = 1e-5  # host vs standalone in fp32; weights and context are copied into aligned storage, so it is exact


def pack_module(name: str):
    """A module of the pack as ComfyUI loaded it (its sys.modules key is the pack's path)."""
    return sys.modules[f"{str(PACK_ROOT).replace('.', '_x_')}.nodes.{name}"]


@pytest.mark.parametrize("depth_pass", ["detailed", "filtered"])
def test_host_path_is_exact_in_fp64(host, depth_pass):
    nodes, base = host
    host_models, host_backbone = pack_module("host_models"), pack_module("host_backbone")
    info = inspect_checkpoint(base / "models" / "tiny")
    images = seeded_images(2, 100, 150, seed=1).double()
    config = PredictConfig(processing_resolution=120, depth_pass=depth_pass)
    with torch.inference_mode():
        model = host_models.build_model(info.unet_config, load_state_dict(info, "unet"), info.latent_scale,
                                        torch.float64)
        vae = host_models.build_vae(info.vae_config, load_state_dict(info, "vae"), torch.float64)
        backbone = host_backbone.HostBackbone(model, vae, empty_embedding(info).double())
        ours = predict_depth(backbone, images, config)
        reference = predict_depth(load_standalone(base / "models" / "tiny", dtype=torch.float64), images, config)
    assert (ours - reference).abs().max().item() <= 1e-7
    assert reference.std() > 0.01


@pytest.mark.parametrize("depth_pass", ["detailed", "filtered"])
def test_host_depth_equals_standalone_fp32(host, depth_pass):
    nodes, base = host
    images = seeded_images(2, 128, 192, seed=1)
    control, depth = run_host(nodes, images, processing_resolution=0, batch_size=1, depth_pass=depth_pass)
    expected = standalone_depth(base / "models" / "tiny", images, processing_resolution=0, depth_pass=depth_pass)
    assert depth.shape == (2, 128, 192) and depth.dtype == torch.float32 and depth.device.type == "cpu"
    assert (depth - expected).abs().max().item() <= FP32_TOL
    assert control.shape == (2, 128, 192, 3)
    assert (control[..., 0] - controlnet_depth(expected)).abs().max().item() <= 10 * FP32_TOL


def test_host_resizes_pads_and_batches_like_standalone(host):
    """One image per call: exact. Several per call: diffusers' decoder happens to run its convolutions channels-last
    at batch > 1 (its attention returns NHWC strides) while ComfyUI's does not, so fp32 sums differ by as much as
    the standalone predictor's own batch-1 vs batch-2 difference (figures in benchmarks/README.md)."""
    nodes, base = host
    images = seeded_images(3, 100, 150, seed=2)
    checkpoint = base / "models" / "tiny"
    _, depth = run_host(nodes, images, processing_resolution=120, batch_size=1)
    expected = standalone_depth(checkpoint, images, processing_resolution=120, batch_size=1)
    assert (depth - expected).abs().max().item() <= FP32_TOL
    _, depth = run_host(nodes, images, processing_resolution=120, batch_size=2)
    expected = standalone_depth(checkpoint, images, processing_resolution=120, batch_size=2)
    assert (depth - expected).abs().max().item() <= 10 * FP32_TOL


def test_temporal_align_in_the_host_equals_the_core_alignment(host):
    """``temporal=align`` on a batch of frames: the standalone depth aligned by ``align_sequence`` with the batch's
    pictures (cuts from the pictures); ``stabilize``: the same with the flow-guided filter; off: unchanged. A splice
    of two scenes is cut at its frame, as the core finds it."""
    from fiffdepth_core.method.denoise import steady_clip
    from fiffdepth_core.method.temporal import align_sequence

    nodes, base = host
    frames = seeded_images(1, 64, 96 + 5, seed=3)
    frames = torch.cat([frames[..., k:k + 96] for k in range(5)])  # [5,3,64,96]: a pan
    expected = standalone_depth(base / "models" / "tiny", frames, processing_resolution=64)
    _, raw = run_host(nodes, frames, processing_resolution=64, temporal="off")
    control, aligned = run_host(nodes, frames, processing_resolution=64, temporal="align",
                                normalization="whole_batch")
    assert (raw - expected).abs().max().item() <= FP32_TOL
    pictures = steady_clip(frames)  # what the temporal modes predict from (levelled, still areas denoised)
    expected = standalone_depth(base / "models" / "tiny", pictures, processing_resolution=64)
    reference, steps = align_sequence(expected, frames=pictures)
    assert not any(step.cut for step in steps[1:])  # one shot: the pictures say so, whatever the random depth does
    assert (aligned - reference).abs().max().item() <= 10 * FP32_TOL
    assert float(aligned.min()) == 0.0 and float(aligned.max()) == 1.0
    assert (aligned - raw).abs().max().item() > 1e-3  # alignment changed something
    assert (control[..., 0] - controlnet_depth(reference, "whole_batch")).abs().max().item() <= 1e-3
    _, steady = run_host(nodes, frames, processing_resolution=64, temporal="stabilize", normalization="whole_batch")
    reference, steps = align_sequence(expected, stabilize=True, frames=pictures)
    assert (steady - reference).abs().max().item() <= 10 * FP32_TOL
    assert (steady - align_sequence(expected, frames=pictures)[0]).abs().max().item() > 1e-3  # the filter did work
    # a splice: a pan over another picture, three frames, after the first pan
    other = seeded_images(1, 64, 96 + 3, seed=9)
    spliced = torch.cat([frames, *(other[..., k:k + 96] for k in range(3))])  # [8,3,64,96]
    _, depth = run_host(nodes, spliced, processing_resolution=64, temporal="align")
    pictures = steady_clip(spliced)
    expected = standalone_depth(base / "models" / "tiny", pictures, processing_resolution=64)
    reference, steps = align_sequence(expected, frames=pictures)
    assert [k for k, step in enumerate(steps) if step.cut] == [0, 5]
    assert (depth - reference).abs().max().item() <= 10 * FP32_TOL
    assert (depth - align_sequence(expected)[0]).abs().max().item() > 1e-3  # not the depth-only rule's answer


def test_newer_comfyui_paths_through_the_real_host(host, monkeypatch):
    """ComfyUI 0.38's dynamic-VRAM API imitated on the real host (CoreModelPatcher, ``assign=`` weight loading,
    ``cuda_device_context`` around VAE calls, free memory from the patcher): the pack takes every new path and the
    depth is unchanged. Without them (the plain host), every other test here runs the fallbacks."""
    import contextlib

    import comfy.model_base
    import comfy.model_management as mm
    import comfy.model_patcher

    nodes, base = host
    log = {"assign": [], "contexts": [], "free": 0}

    class Dynamic(comfy.model_patcher.ModelPatcher):
        def is_dynamic(self):
            return True

        def get_free_memory(self, device):
            log["free"] += 1
            return mm.get_free_memory(device)

    original = comfy.model_base.BaseModel.load_model_weights

    def load_model_weights(self, sd, unet_prefix="", assign=False):  # the newer signature
        log["assign"].append(assign)
        return original(self, sd, unet_prefix)

    @contextlib.contextmanager
    def cuda_device_context(device):
        log["contexts"].append(str(device))
        yield

    monkeypatch.setattr(comfy.model_patcher, "CoreModelPatcher", Dynamic, raising=False)
    monkeypatch.setattr(comfy.model_base.BaseModel, "load_model_weights", load_model_weights)
    monkeypatch.setattr(mm, "cuda_device_context", cuda_device_context, raising=False)
    mapping = nodes.NODE_CLASS_MAPPINGS
    images = seeded_images(2, 64, 96, seed=5)
    with torch.inference_mode():
        model, vae, cond = mapping["FiffDepthLoader"].execute(model_name="tiny", precision="fp32").args
        _, depth = mapping["FiffDepthEstimate"].execute(model=model, vae=vae, image=images.movedim(1, -1),
                                                        conditioning=cond, processing_resolution=64,
                                                        batch_size=1).args
    assert type(model) is Dynamic and log["assign"] == [True]
    assert log["free"] == 1 and log["contexts"] == ["cpu"] * 4  # 2 encodes + 2 decodes (one image per call)
    expected = standalone_depth(base / "models" / "tiny", images, processing_resolution=64)
    assert (depth - expected).abs().max().item() <= FP32_TOL


def test_save_node_writes_lossless_files_with_counter_names(host):
    nodes, base = host
    depth = torch.rand(2, 16, 24)
    save = nodes.NODE_CLASS_MAPPINGS["FiffDepthSave"]
    save.execute(depth=depth, filename_prefix="fd/test", format="npy")
    save.execute(depth=depth, filename_prefix="fd/test", format="npy")
    files = sorted((base / "output" / "fd").glob("test_*.npy"))
    assert [f.name for f in files] == [f"test_{i:05}_.npy" for i in range(1, 5)]
    assert np.array_equal(np.load(files[1]), depth[1].numpy())


def test_bad_conditioning_is_refused_with_guidance(host):
    nodes, _ = host
    mapping = nodes.NODE_CLASS_MAPPINGS
    model, vae, _ = mapping["FiffDepthLoader"].execute(model_name="tiny", precision="fp32").args
    image = torch.rand(1, 64, 64, 3)
    with pytest.raises(ValueError, match="77-token"):
        mapping["FiffDepthEstimate"].execute(model=model, vae=vae, image=image, conditioning=[[torch.zeros(1, 77, 32),
                                                                                              {}]])
    with pytest.raises(ValueError, match="conditioning"):
        mapping["FiffDepthEstimate"].execute(model=model, vae=vae, image=image)


def test_headless_server_runs_loader_estimate_save(tmp_path):
    from PIL import Image

    write_random_pipeline(tmp_path / "models" / "fiffdepth" / "tiny", geometry="tiny", seed=0)
    (tmp_path / "input").mkdir()
    pixels = (seeded_images(1, 96, 128, seed=4)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "input" / "photo.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "2": {"class_type": "FiffDepthLoader", "inputs": {"model_name": "tiny", "precision": "fp32"}},
        "3": {"class_type": "FiffDepthEstimate", "inputs": {
            "model": ["2", 0], "vae": ["2", 1], "image": ["1", 0], "conditioning": ["2", 2],
            "processing_resolution": 0, "batch_size": 1, "depth_pass": "detailed", "normalization": "per_image",
            "vae_tiling": "off", "temporal": "off"}},
        "4": {"class_type": "FiffDepthSave", "inputs": {"depth": ["3", 1], "filename_prefix": "srv/depth",
                                                         "format": "npy"}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "srv/cn"}},
    }
    with comfy_server(tmp_path) as url:
        status, body = post_prompt(url, prompt)
        assert status == 200, body
        wait_for(url, body["prompt_id"])
    saved = np.load(tmp_path / "output" / "srv" / "depth_00001_.npy")
    image = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255.0
    expected = standalone_depth(tmp_path / "models" / "fiffdepth" / "tiny", image, processing_resolution=0)[0]
    assert saved.shape == (96, 128)
    assert np.abs(saved - expected.numpy()).max() <= FP32_TOL
    assert (tmp_path / "output" / "srv" / "cn_00001_.png").is_file()


def test_host_upcast_computes_in_fp32_on_a_clone(host):
    nodes, base = host
    host_backbone = pack_module("host_backbone")
    model, vae, cond = nodes.NODE_CLASS_MAPPINGS["FiffDepthLoader"].execute(model_name="tiny", precision="fp32").args
    backbone = host_backbone.HostBackbone(model, vae, cond[0][0])
    upcast = backbone.upcast()
    assert upcast.dtype == torch.float32 and upcast.patcher is not backbone.patcher
    images = seeded_images(1, 64, 64, seed=6)
    config = PredictConfig(processing_resolution=0)
    assert torch.equal(predict_depth(upcast, images, config), predict_depth(backbone, images, config))


def tiny_comfy_clip(checkpoint):
    """A real ComfyUI CLIP object around the tiny text encoder (built like core's SD2 CLIP, from config)."""
    import functools
    import json

    import comfy.sd
    import comfy.sd1_clip as sd1
    from safetensors.torch import load_file

    config = json.loads((checkpoint / "text_encoder" / "config.json").read_text())
    weights = {k if k.startswith(("text_model.", "text_projection")) else f"text_model.{k}": v
               for k, v in load_file(str(checkpoint / "text_encoder" / "model.safetensors")).items()}
    table = weights["text_model.embeddings.token_embedding.weight"]  # ComfyUI's CLIP has CLIP's 49408-token table
    weights["text_model.embeddings.token_embedding.weight"] = torch.cat([table, table.new_zeros(49408 - len(table),
                                                                                                 table.shape[1])])
    special = {"start": config["bos_token_id"], "end": config["eos_token_id"], "pad": 0}

    class Target:
        params = {}
        clip = functools.partial(sd1.SD1ClipModel, clip_name="h", clip_model=functools.partial(
            sd1.SDClipModel, textmodel_json_config=config, layer="last", special_tokens=special))
        tokenizer = functools.partial(sd1.SD1Tokenizer, clip_name="h", tokenizer=functools.partial(
            sd1.SDTokenizer, tokenizer_path=str(checkpoint / "tokenizer"), embedding_size=config["hidden_size"],
            embedding_key="clip_h", pad_with_end=False))

    clip = comfy.sd.CLIP(target=Target, model_options={"dtype": torch.float32})
    clip.load_sd(weights)
    return clip


def test_clip_input_gives_the_unpadded_embedding_whatever_the_last_layer_setting(host):
    nodes, base = host
    estimate = pack_module("estimate")
    model, vae, cond = nodes.NODE_CLASS_MAPPINGS["FiffDepthLoader"].execute(model_name="tiny", precision="fp32").args
    clip = tiny_comfy_clip(base / "models" / "tiny")
    with torch.inference_mode():
        from_clip = estimate.empty_prompt_context(model, clip=clip)
        skipped = clip.clone()
        skipped.clip_layer(-2)  # what CLIPSetLastLayer(-2) does upstream
        from_skipped = estimate.empty_prompt_context(model, clip=skipped)
        assert not torch.allclose(skipped.encode_from_tokens(skipped.tokenize(""))[:, :2], from_clip, atol=1e-3)
    reference = cond[0][0]
    assert from_clip.shape == (1, 2, 32)
    assert (from_clip - reference).abs().max().item() <= 1e-5
    assert torch.equal(from_clip, from_skipped)
    images = seeded_images(1, 64, 64, seed=8).movedim(1, -1)
    mapping = nodes.NODE_CLASS_MAPPINGS
    with torch.inference_mode():
        _, by_clip = mapping["FiffDepthEstimate"].execute(model=model, vae=vae, image=images, clip=clip,
                                                          processing_resolution=0).args
        _, by_cond = mapping["FiffDepthEstimate"].execute(model=model, vae=vae, image=images, conditioning=cond,
                                                          processing_resolution=0).args
    assert (by_clip - by_cond).abs().max().item() <= FP32_TOL
