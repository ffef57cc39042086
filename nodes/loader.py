"""FiffDepthLoader: a FiffDepth checkpoint -> ComfyUI MODEL, VAE and the empty-prompt CONDITIONING."""

from __future__ import annotations

import comfy.model_management as mm
import torch
from comfy_api.latest import io

from ..fiffdepth_core.method import DTYPES, FAMILY_CHOICES, PRECISIONS
from ..fiffdepth_core.weights import empty_embedding, inspect_checkpoint, load_state_dict
from . import compat
from .folders import checkpoint_names, known_name, locate
from .host_backbone import FAMILY_ATTR
from .host_models import build_model, build_vae


def pick_dtypes(precision: str) -> tuple[torch.dtype, torch.dtype]:
    """(UNet, VAE) dtypes. auto follows ComfyUI's policy (and its --fp32-unet/--bf16-vae flags), preferring bf16;
    an fp16 request keeps the VAE out of fp16, where SD's VAE overflows."""
    device = mm.get_torch_device()
    if precision == "auto":
        unet = mm.unet_dtype(device, supported_dtypes=[torch.bfloat16, torch.float16, torch.float32])
        return unet, mm.vae_dtype(device, [torch.bfloat16, torch.float32])
    unet = DTYPES[precision]
    vae = unet if unet != torch.float16 else mm.vae_dtype(device, [torch.bfloat16, torch.float32])
    return unet, vae


class FiffDepthLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FiffDepthLoader",
            display_name="FiffDepth Loader",
            category=compat.CATEGORY,
            **compat.schema_extras(io.Schema, compat.SEARCH_ALIASES + ["depth model", "load fiffdepth"]),
            description="Loads a FiffDepth checkpoint (diffusers folder, folder of single files, or one .safetensors "
                        "bundle) from models/fiffdepth or models/geometry_estimation as ComfyUI MODEL and VAE, built "
                        "from the checkpoint's own configs, plus the empty-prompt embedding FiffDepth conditions on. "
                        "Lotus-D, GenPercept and Marigold-E2E-FT checkpoints (published weights) load the same way "
                        "and run as their authors run them. Entries marked '(download ...)' are public models not "
                        "installed yet: running the node downloads one into models/fiffdepth/<name>/ (checked against "
                        "the hub's checksums; HF_HUB_OFFLINE, HF_ENDPOINT and HF_TOKEN are honoured), then loads it.",
            inputs=[
                io.Combo.Input("model_name", options=checkpoint_names(),
                               tooltip="Installed checkpoints (models/fiffdepth, models/geometry_estimation) first, "
                                       "then public models with their download size: picking one downloads it on the "
                                       "first run (docs/models.md). No FiffDepth weights are public (train one with "
                                       "train/finetune.py); Lotus-D, GenPercept and Marigold-E2E-FT run today."),
                io.Combo.Input("precision", options=list(PRECISIONS), default="auto",
                               tooltip="auto: ComfyUI's choice for this device (fp32 on CPU, bf16/fp16 on GPU). fp16 "
                                       "keeps the VAE in bf16/fp32."),
                io.Combo.Input("family", options=list(FAMILY_CHOICES), default="auto", optional=True,
                               tooltip="Model family. auto: recognised from the checkpoint (FiffDepth, Lotus-D, "
                                       "GenPercept, Marigold-E2E-FT; '-disparity' checkpoints by their folder name). "
                                       "Pick one to override."),
            ],
            outputs=[
                io.Model.Output(display_name="MODEL"),
                io.Vae.Output(display_name="VAE"),
                io.Conditioning.Output(display_name="CONDITIONING", tooltip="Empty-prompt embedding [1,2,D]"),
            ],
        )

    @classmethod
    def validate_inputs(cls, model_name) -> bool | str:
        """Any installed checkpoint or catalogue model, so a saved workflow naming a model as '<id> (download ...)'
        still runs once it is installed (the list then shows it by its id)."""
        if known_name(model_name):
            return True
        return f"{model_name!r} is neither an installed checkpoint nor a catalogue model"

    @classmethod
    def execute(cls, model_name, precision="auto", family="auto") -> io.NodeOutput:
        path, family = locate(model_name, family)
        info = inspect_checkpoint(path, family)
        unet_dtype, vae_dtype = pick_dtypes(precision)
        model = build_model(info.unet_config, load_state_dict(info, "unet"), info.latent_scale, unet_dtype)
        setattr(model.model, FAMILY_ATTR, info.family)  # FiffDepthEstimate runs the pass this family's way
        vae = build_vae(info.vae_config, load_state_dict(info, "vae"), vae_dtype)
        embed = empty_embedding(info)  # [1,2,D]
        return io.NodeOutput(model, vae, [[embed, {}]])
