"""The three backbone verbs on ComfyUI's own MODEL and VAE objects (docs/architecture.md, "ComfyUI").

* ``denoise``: a clone of the ModelPatcher with ``model_sampling`` object-patched to an IMG_TO_IMG discrete
  sampling (identity input, raw output), called through ``apply_model`` with ``transformer_options`` so weight
  patches (LoRA), attention overrides and wrappers all apply; loaded through model management with a memory
  estimate, between ``pre_run()`` and ``cleanup()``. ``sigma_min`` maps to timestep 0; a negative sigma is passed
  through as a raw timestep (the t = -1 filter pass).
  The family record adds what its UNet call needs through ComfyUI's own inputs: Lotus' class label as the ADM
  input ``y``, E2E-FT's zero latent as ``c_concat`` (appended after the input, as the official concatenation).
  Timesteps 999 (Lotus-D, E2E-FT) and 1 (GenPercept) go in as their sigmas, which the sampling maps back exactly.
* ``encode``/``decode``: ``first_stage_model`` directly after loading ``vae.patcher``, which avoids
  ``VAE.encode``'s silent crop, ``VAE.decode``'s per-channel clamp and the silent tiled fallback on OOM.
"""

from __future__ import annotations

import comfy.model_base
import comfy.model_management as mm
import comfy.model_patcher
import comfy.model_sampling
import torch

from ..fiffdepth_core.method import FIFFDEPTH, LOTUS_D, Family, timestep_batch
from . import compat


class RawSampling(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.IMG_TO_IMG):
    """IMG_TO_IMG discrete sampling whose negative sigmas are raw timesteps (for t = -1)."""

    def timestep(self, sigma):
        lookup = super().timestep(sigma.clamp_min(self.sigma_min.to(sigma.device)))  # sigma_min -> exactly 0
        return torch.where(sigma < 0, sigma, lookup.to(sigma.dtype))


def raw_sampling_for(model) -> RawSampling:
    return RawSampling(model.model.model_config)


def conditioning_tensor(conditioning) -> torch.Tensor:
    """The embedding inside a CONDITIONING value ``[[tensor, {...}], ...]`` (first entry)."""
    if isinstance(conditioning, torch.Tensor):
        return conditioning
    try:
        return conditioning[0][0]
    except (TypeError, IndexError, KeyError) as err:
        raise ValueError("`conditioning` must be a CONDITIONING value such as FiffDepthLoader's output") from err


FAMILY_ATTR = "fiffdepth_family"  # FiffDepthLoader records the checkpoint's family on the MODEL's base model


def family_of(model) -> Family:
    """The family of a MODEL: as FiffDepthLoader recorded it, Lotus-D for core's own Lotus models (UNETLoader on a
    Lotus-D UNet), else FiffDepth. An 8-channel UNet loaded elsewhere is refused (its scheduler cannot be checked)."""
    base = model.model
    family = getattr(base, FAMILY_ATTR, None)
    if family is not None:
        return family
    config = base.model_config.unet_config
    lotus = getattr(comfy.model_base, "Lotus", ())
    if isinstance(base, lotus) or config.get("adm_in_channels") == LOTUS_D.class_dim:
        return LOTUS_D
    if config.get("in_channels", 4) != 4 or config.get("adm_in_channels") is not None:
        raise ValueError(f"this MODEL's UNet (in_channels={config.get('in_channels')}, adm_in_channels="
                         f"{config.get('adm_in_channels')}) is not one FiffDepth can run as loaded; load the "
                         "checkpoint with FiffDepthLoader, which recognises Marigold-E2E-FT and the other families")
    return FIFFDEPTH


class HostBackbone:
    """:class:`fiffdepth_core.method.backbone.Backbone` on a ComfyUI MODEL (ModelPatcher) and VAE."""

    def __init__(self, model, vae, context: torch.Tensor, family: Family | None = None):
        self.patcher = model.clone()
        self.patcher.add_object_patch("model_sampling", raw_sampling_for(model))
        self.vae = vae
        self.context = context.detach().clone()  # [1,T,D], fresh aligned storage (CPU kernels round by alignment)
        self.device = self.patcher.load_device
        base = self.patcher.model
        self.dtype = base.manual_cast_dtype or base.get_dtype()
        self.latent_format = self.patcher.get_model_object("latent_format")
        self.family = family if family is not None else family_of(model)

    def upcast(self) -> "HostBackbone":
        """The same models computing the UNet in fp32 (ComfyUI's manual cast), to recover from an fp16 overflow."""
        model = self.patcher.clone()
        model.set_model_compute_dtype(torch.float32)
        return HostBackbone(model, self.vae, self.context, self.family)

    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        with compat.device_context(vae.device):  # as core's VAE.encode (ComfyUI 0.38)
            compat.load_vae(vae, vae.memory_used_encode(rgb.shape, vae.vae_dtype))
            z = vae.first_stage_model.encode(rgb.to(vae.device, vae.vae_dtype)).float()  # [B,4,h,w] posterior mean
        return self.latent_format.process_in(z)  # x scale

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        z = self.latent_format.process_out(latent.float())  # / scale, [B,4,h,w]
        with compat.device_context(vae.device):
            compat.load_vae(vae, vae.memory_used_decode(latent.shape, vae.vae_dtype))
            return vae.first_stage_model.decode(z.to(vae.device, vae.vae_dtype)).float()  # [B,3,H,W] unclamped

    def denoise(self, latent: torch.Tensor, timestep: int | torch.Tensor) -> torch.Tensor:
        patcher, batch = self.patcher, latent.shape[0]
        mm.load_models_gpu([patcher], memory_required=patcher.memory_required(latent.shape))
        sampling = patcher.get_model_object("model_sampling")
        sigma = self._sigmas(sampling, timestep, batch)  # [B]
        options = comfy.model_patcher.create_model_options_clone(patcher.model_options)
        transformer_options = options.setdefault("transformer_options", {})
        transformer_options.update(sigmas=sigma, cond_or_uncond=[0] * batch)
        x = latent.to(self.device)
        cond = {"c_crossattn": self.context.to(self.device).expand(batch, -1, -1),  # [B,T,D]
                "transformer_options": transformer_options}
        labels = self.family.class_labels(batch, self.device, torch.float32)  # [B,n] or None
        if labels is not None:
            cond["y"] = labels  # Lotus' task label through the label embedding (ADM input)
        if self.family.concat_zeros:
            cond["c_concat"] = torch.zeros_like(x)  # appended after x: cat([rgb_latent, zeros]), [B,8,h,w]
        patcher.pre_run()
        try:
            wrapper = options.get("model_function_wrapper")
            if wrapper is not None:
                out = wrapper(patcher.model.apply_model, {"input": x, "timestep": sigma, "c": cond,
                                                          "cond_or_uncond": [0] * batch})
            else:
                out = patcher.model.apply_model(x, sigma, **cond)
        finally:
            patcher.cleanup()
        return out.float()  # [B,4,h,w]

    def _sigmas(self, sampling, timestep, batch: int) -> torch.Tensor:
        t = timestep_batch(timestep, batch, self.device)  # [B] int64
        sigmas = sampling.sigmas.to(self.device)[t.clamp_min(0)]  # t >= 0 -> its sigma (0 -> sigma_min)
        return torch.where(t < 0, t.float(), sigmas.float())  # t < 0 -> itself, read back raw by RawSampling
