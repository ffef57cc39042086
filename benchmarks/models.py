"""Random-weight models of a named geometry, their copies per device/dtype, inputs, and the ComfyUI host objects.

Random weights run exactly the arithmetic trained ones do, so timings and memory are honest; the depth they give
is not meaningful, only comparable between paths. All paths of a run share one seeded set of weights.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field

import torch

from fiffdepth_core.method import StandaloneBackbone
from fiffdepth_testkit.comfyui import load_pack_into_comfyui, pack_module
from fiffdepth_testkit.models import geometry_configs, random_unet, random_vae

log = logging.getLogger(__name__)


@dataclass
class Weights:
    """One seeded model set (fp32, CPU) and the per-(device, dtype) copies made from it."""

    geometry: str
    unet_config: dict
    vae_config: dict
    unet: torch.nn.Module
    vae: torch.nn.Module
    embed: torch.Tensor  # [1,2,D], stands in for the text encoder's output for ""
    copies: dict = field(default_factory=dict)

    @property
    def latent_scale(self) -> float:
        return float(self.vae_config.get("scaling_factor", 0.18215))

    def modules(self, device: torch.device, unet_dtype: torch.dtype, vae_dtype: torch.dtype,
                channels_last: bool = False):
        """(unet, vae) on ``device`` in the given dtypes; copies are cached, the fp32 CPU originals shared."""
        unet = self._copy("unet", device, unet_dtype, channels_last)
        vae = self._copy("vae", device, vae_dtype, channels_last)
        return unet, vae

    def _copy(self, part: str, device: torch.device, dtype: torch.dtype, channels_last: bool):
        key = (part, str(device), dtype, channels_last)
        if key not in self.copies:
            original = getattr(self, part)
            if device.type == "cpu" and dtype == torch.float32 and not channels_last:
                module = original
            else:
                module = copy.deepcopy(original).to(device=device, dtype=dtype)
                if channels_last:
                    module = module.to(memory_format=torch.channels_last)
            self.copies[key] = module.eval()
        return self.copies[key]

    def drop(self, device: torch.device) -> None:
        """Forget the copies on ``device`` (frees GPU memory between modes)."""
        self.copies = {k: v for k, v in self.copies.items() if k[1] != str(device)}


def build_weights(geometry: str, seed: int = 0) -> Weights:
    unet_cfg, vae_cfg, _ = geometry_configs(geometry)
    unet, vae = random_unet(unet_cfg, seed), random_vae(vae_cfg, seed + 1)
    gen = torch.Generator().manual_seed(seed + 2)
    embed = torch.randn((1, 2, unet_cfg["cross_attention_dim"]), generator=gen)  # [1,2,D]
    return Weights(geometry, unet_cfg, vae_cfg, unet, vae, embed)


def standalone_backbone(weights: Weights, device: torch.device, unet_dtype: torch.dtype, vae_dtype: torch.dtype,
                        channels_last: bool = False, compile_modules: bool = False,
                        compile_mode: str | None = None) -> StandaloneBackbone:
    unet, vae = weights.modules(device, unet_dtype, vae_dtype, channels_last)
    if compile_modules:  # compile fresh wrappers; the shared modules stay uncompiled for the other paths
        unet = torch.compile(unet, mode=compile_mode)
        vae = copy.copy(vae)  # shallow: shares parameters, own submodule table
        vae._modules = dict(vae._modules)
        vae.encoder = torch.compile(vae.encoder, mode=compile_mode)
        vae.decoder = torch.compile(vae.decoder, mode=compile_mode)
    return StandaloneBackbone(unet, vae, weights.embed, latent_scale=weights.latent_scale)


# --- the ComfyUI host path ----------------------------------------------------------------------------------

def comfyui_path() -> str | None:
    return os.environ.get("COMFYUI_PATH") or None


def import_comfy(device: torch.device):
    """Import ComfyUI from ``COMFYUI_PATH`` and load the pack the way ComfyUI does; returns the pack's
    ``host_models`` and ``host_backbone`` modules."""
    load_pack_into_comfyui(comfyui_path(), cpu=device.type == "cpu")
    return pack_module("nodes.host_models"), pack_module("nodes.host_backbone")


def comfy_version() -> str | None:
    try:
        import comfyui_version

        return comfyui_version.__version__
    except ImportError:
        return None


def host_backbone(modules, weights: Weights, unet_dtype: torch.dtype, vae_dtype: torch.dtype):
    """ComfyUI MODEL/VAE built with the pack's own builders from the shared weights, wrapped in HostBackbone."""
    host_models, host_bb = modules
    model = host_models.build_model(weights.unet_config, weights.unet.state_dict(), weights.latent_scale, unet_dtype)
    vae = host_models.random_vae(weights.vae_config, weights.vae.state_dict(), vae_dtype)
    return host_bb.HostBackbone(model, vae, weights.embed)
