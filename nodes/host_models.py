"""Building ComfyUI MODEL and VAE objects from a FiffDepth checkpoint's own configs.

ComfyUI's stock loaders detect SD2 by matching a fixed list of geometries, which rejects any other size (test
checkpoints, slimmed models). Here the host objects are built from the checkpoint's diffusers ``config.json``
instead, so every SD2-family geometry loads, with the same classes and weight handling ComfyUI uses for SD2.
"""

from __future__ import annotations

import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
import comfy.utils
import torch

from ..fiffdepth_core.weights import ldm_unet_config
from . import compat

# Keys ComfyUI's UNetModel takes beyond the LDM ones the shared translation produces.
COMFY_EXTRAS = {"use_temporal_attention": False, "use_temporal_resblock": False, "attn_precision": torch.float32}


def comfy_unet_config(config: dict) -> dict:
    """Translate a diffusers ``UNet2DConditionModel`` config into ComfyUI's ``UNetModel`` arguments."""
    return {**ldm_unet_config(config), **COMFY_EXTRAS}


class FiffDepthSD2(comfy.supported_models.SD20):
    """SD2's model config with the geometry supplied by the checkpoint (no detection, no extra defaults)."""

    unet_config = {}
    unet_extra_config = {}


def _latent_format(scale: float):
    if abs(scale - 0.18215) < 1e-9:
        return comfy.latent_formats.SD15

    class Scaled(comfy.latent_formats.SD15):
        def __init__(self):
            super().__init__(scale_factor=scale)

    return Scaled


def build_model(unet_config: dict, diffusers_sd: dict, latent_scale: float, dtype: torch.dtype):
    """A ComfyUI ``ModelPatcher`` for the UNet, IMG_TO_IMG typed (raw output), weights in ``dtype``.

    A UNet with a class embedding (Lotus) becomes core's ``Lotus`` model: its label embedding is fed by the ADM
    input ``y``, which core's samplers fill with Lotus' depth label. An 8-channel UNet (Marigold-E2E-FT) takes its
    extra channels through ``c_concat``.
    """
    cfg = comfy_unet_config(unet_config)
    model_config = type("FiffDepthModelConfig", (FiffDepthSD2,), {"latent_format": _latent_format(latent_scale)})(cfg)
    load_device = comfy.model_management.get_torch_device()
    manual_cast = comfy.model_management.unet_manual_cast(dtype, load_device, model_config.supported_inference_dtypes)
    model_config.set_inference_dtype(dtype, manual_cast)
    offload = comfy.model_management.unet_offload_device()
    lotus = getattr(comfy.model_base, "Lotus", None)  # core's Lotus model (newer than ComfyUI 0.3.48)
    model_class = lotus if cfg["adm_in_channels"] is not None and lotus is not None else comfy.model_base.BaseModel
    model = model_class(model_config, model_type=comfy.model_base.ModelType.IMG_TO_IMG, device=offload)
    key_map = comfy.utils.unet_to_diffusers(model_config.unet_config)  # diffusers key -> LDM key
    ldm_sd = {key_map[k]: v for k, v in diffusers_sd.items() if k in key_map}
    unmapped = sorted(k for k in diffusers_sd if k not in key_map)
    missing = sorted(set(model.diffusion_model.state_dict()) - set(ldm_sd))
    if unmapped or missing:
        raise ValueError(f"UNet weights do not match its config: {len(missing)} missing (e.g. {missing[:3]}), "
                         f"{len(unmapped)} unexpected (e.g. {unmapped[:3]})")
    patcher = compat.patcher_class()(model, load_device=load_device, offload_device=offload)  # dynamic VRAM: 0.38
    if compat.is_dynamic(patcher):  # weights are assigned, not copied: give them the model's dtype first
        ldm_sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in ldm_sd.items()}
    compat.load_model_weights(model, ldm_sd, patcher)
    return patcher


def build_vae(vae_config: dict, diffusers_sd: dict, dtype: torch.dtype):
    """A ComfyUI ``VAE`` with the geometry of a diffusers ``AutoencoderKL`` config."""
    channels = list(vae_config["block_out_channels"])
    if len(channels) != 4:
        raise ValueError(f"VAE must have 4 levels like SD's (ComfyUI converts diffusers VAEs of 4), got {channels}")
    latent = vae_config.get("latent_channels", 4)
    ddconfig = {"double_z": True, "z_channels": latent, "resolution": 256, "in_channels": 3, "out_ch": 3,
                "ch": channels[0], "ch_mult": [c // channels[0] for c in channels],
                "num_res_blocks": vae_config.get("layers_per_block", 2), "attn_resolutions": [], "dropout": 0.0}
    return comfy.sd.VAE(sd=dict(diffusers_sd), config={"params": {"embed_dim": latent, "ddconfig": ddconfig}},
                        dtype=dtype)
