"""Run inside a Forge environment (FORGE_PYTHON, cwd FORGE_PATH): write a small random-weight SD 1.5-family
checkpoint and a matching depth ControlNet, built from config with Forge's own classes (nothing downloaded).

Usage: forge_tiny_sd15.py MODELS_DIR. Writes MODELS_DIR/Stable-diffusion/tiny_sd15.safetensors and
MODELS_DIR/ControlNet/tiny_control_depth.safetensors. Forge recognises them as SD 1.5 from their tensor shapes
(320 base channels, 768-wide text conditioning); the UNet is cut to two levels and the VAE and CLIP-L are the
standard geometry (the configs Forge bundles), so a 64 x 64 txt2img step runs in seconds on a CPU.
"""

import os
import sys

root = os.getcwd()
sys.path[:0] = [root, os.path.join(root, "packages_3rdparty"), os.path.join(root, "repositories", "huggingface_guess")]
models, sys.argv = sys.argv[1], [sys.argv[0], "--always-cpu"]

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402

from backend.nn.cnets.cldm import ControlNet  # noqa: E402
from backend.nn.unet import IntegratedUNet2DConditionModel  # noqa: E402
from backend.nn.vae import IntegratedAutoencoderKL  # noqa: E402

REPO = os.path.join(root, "backend", "huggingface", "runwayml", "stable-diffusion-v1-5")
UNET = dict(in_channels=4, model_channels=320, out_channels=4, num_res_blocks=[1, 1], channel_mult=[1, 2],
            num_heads=8, num_head_channels=-1, use_spatial_transformer=True, transformer_depth=[1, 1],
            transformer_depth_output=[1, 1, 1, 1], transformer_depth_middle=1, context_dim=768,
            use_linear_in_transformer=False)


def half(prefix: str, module: torch.nn.Module) -> dict:
    return {prefix + k: v.detach().to(torch.float16).contiguous() for k, v in module.state_dict().items()
            if v.is_floating_point()}


torch.manual_seed(0)
checkpoint = half("model.diffusion_model.", IntegratedUNet2DConditionModel(**UNET))
checkpoint.update(half("first_stage_model.", IntegratedAutoencoderKL.from_config(
    IntegratedAutoencoderKL.load_config(os.path.join(REPO, "vae")))))
text = CLIPTextModel(CLIPTextConfig.from_pretrained(os.path.join(REPO, "text_encoder")))
checkpoint.update(half("cond_stage_model.transformer.", text))
control = half("", ControlNet(hint_channels=3, **{k: v for k, v in UNET.items() if k != "out_channels"}))
for folder, name, tensors in (("Stable-diffusion", "tiny_sd15", checkpoint), ("ControlNet", "tiny_control_depth",
                                                                                  control)):
    os.makedirs(os.path.join(models, folder), exist_ok=True)
    save_file(tensors, os.path.join(models, folder, name + ".safetensors"))
print("ok")
