"""The three backbone verbs on Forge's own backend: its UNet class, UnetPatcher, VAE patcher and memory manager.

* UNet: ``IntegratedUNet2DConditionModel`` built from the checkpoint's diffusers config (translated to LDM terms by
  :func:`fiffdepth_core.weights.ldm_config.ldm_unet_config`) inside ``using_forge_operations``, with Forge's storage and
  computation dtypes (so ``--always-cpu``, ``--unet-in-bf16`` and friends apply), wrapped in a ``UnetPatcher``
  whose predictor passes input, timestep and output through raw: t = 0 and t = -1 reach the UNet unchanged.
  ``denoise`` loads it through ``memory_management.load_models_gpu`` with Forge's memory estimate and calls
  ``KModel.apply_model`` with a fresh ``transformer_options``; the checkpoint's model family decides the rest of
  the call (Lotus-D's task label as the ADM input ``y``, Marigold-E2E-FT's zero latent appended to the input).
* VAE: ``IntegratedAutoencoderKL`` in Forge's ``VAE`` patcher; encode takes the posterior *mode* (its default
  samples) and decode calls the model directly (``VAE.decode`` clamps and may tile silently).
"""

from __future__ import annotations

import inspect

import torch
from backend import memory_management as mm
from backend.nn.unet import IntegratedUNet2DConditionModel
from backend.nn.vae import IntegratedAutoencoderKL
from backend.operations import using_forge_operations
from backend.patcher.unet import UnetPatcher
from backend.patcher.vae import VAE
from huggingface_guess.diffusers_convert import convert_vae_state_dict
from huggingface_guess.utils import unet_to_diffusers

from fiffdepth_core.method import DTYPES, FIFFDEPTH, Family, timestep_batch
from fiffdepth_core.weights import (
    CheckpointError,
    empty_embedding,
    inspect_checkpoint,
    ldm_unet_config,
    load_state_dict,
)

SUPPORTED = [torch.float16, torch.bfloat16, torch.float32]


class RawPredictor(torch.nn.Module):
    """A k-diffusion predictor that changes nothing: ``apply_model`` then returns the UNet's raw output."""

    def calculate_input(self, sigma, x):
        return x

    def timestep(self, sigma):
        return sigma

    def calculate_denoised(self, sigma, model_output, model_input):
        return model_output


def _strict(model: torch.nn.Module, state_dict: dict, where: str) -> None:
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{where}: the weights do not fit Forge's model built from the config: {len(missing)} "
                              f"missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")


def unet_dtypes(precision: str, parameters: int) -> tuple[torch.dtype, torch.dtype]:
    """(storage, computation) dtypes: Forge's own choice (its command-line flags included) for ``auto``."""
    device = mm.get_torch_device()
    if precision != "auto":
        return DTYPES[precision], DTYPES[precision]
    storage = mm.unet_dtype(model_params=parameters, supported_dtypes=SUPPORTED)
    return storage, mm.get_computation_dtype(device, parameters=parameters, supported_dtypes=SUPPORTED)


def build_unet(unet_config: dict, diffusers_sd: dict, precision: str, where: str) -> UnetPatcher:
    ldm = ldm_unet_config(unet_config)
    accepted = set(inspect.signature(IntegratedUNet2DConditionModel.__init__).parameters)
    ldm = {k: v for k, v in ldm.items() if k in accepted}
    key_map = unet_to_diffusers(ldm)  # diffusers key -> LDM key
    unmapped = sorted(k for k in diffusers_sd if k not in key_map)
    if unmapped:
        raise CheckpointError(f"{where}: {len(unmapped)} UNet weights have no place in the LDM UNet "
                              f"(e.g. {unmapped[:3]})")
    ldm_sd = {key_map[k]: v for k, v in diffusers_sd.items()}
    parameters = mm.state_dict_parameters(ldm_sd)
    storage, computation = unet_dtypes(precision, parameters)
    initial = mm.unet_inital_load_device(parameters=parameters, dtype=storage)
    with using_forge_operations(device=initial, dtype=storage, manual_cast_enabled=storage != computation):
        unet = IntegratedUNet2DConditionModel.from_config(ldm).to(device=initial, dtype=storage)
    _strict(unet, ldm_sd, where)
    unet.storage_dtype, unet.computation_dtype = storage, computation
    unet.load_device, unet.initial_device = mm.get_torch_device(), initial
    unet.offload_device = mm.unet_offload_device()
    return UnetPatcher.from_model(unet, diffusers_scheduler=None, config=ldm, k_predictor=RawPredictor())


def build_vae(vae_config: dict, diffusers_sd: dict, precision: str, where: str) -> VAE:
    config = {k: v for k, v in vae_config.items() if v is not None and not k.startswith("_")}
    dtype = mm.vae_dtype() if precision == "auto" else DTYPES[precision]
    if dtype == torch.float16 and precision != "auto":  # SD's VAE overflows in fp16: Forge's own choice instead
        dtype = mm.vae_dtype()
    with using_forge_operations(device=mm.cpu, dtype=dtype):
        model = IntegratedAutoencoderKL.from_config(config)
    _strict(model, convert_vae_state_dict(diffusers_sd), where)
    return VAE(model=model, dtype=dtype)


class ForgeBackbone:
    """:class:`fiffdepth_core.method.backbone.Backbone` on Forge's backend objects."""

    def __init__(self, patcher: UnetPatcher, vae: VAE, context: torch.Tensor, latent_scale: float,
                 family: Family = FIFFDEPTH):
        self.patcher, self.vae, self.latent_scale = patcher, vae, float(latent_scale)
        self.context = context.detach().float().clone()  # [1,T,D]
        self.device = patcher.load_device
        self.dtype = patcher.model.computation_dtype
        self.family = family  # what the UNet call gets besides the latent (class label, concatenated zeros)

    @classmethod
    def load(cls, path, precision: str = "auto", family: str = "auto") -> "ForgeBackbone":
        info = inspect_checkpoint(path, family)
        context = empty_embedding(info)  # [1,2,D]
        patcher = build_unet(info.unet_config, load_state_dict(info, "unet"), precision, f"{info.path} (unet)")
        vae = build_vae(info.vae_config, load_state_dict(info, "vae"), precision, f"{info.path} (vae)")
        return cls(patcher, vae, context, info.latent_scale, info.family)

    @property
    def vae_dtype(self) -> torch.dtype:
        return self.vae.vae_dtype

    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        mm.load_models_gpu([vae.patcher], memory_required=vae.memory_used_encode(rgb.shape, vae.vae_dtype))
        z = vae.first_stage_model.encode(rgb.to(vae.device, vae.vae_dtype), regulation=lambda p: p.mode())
        return z.float() * self.latent_scale  # [B,4,h,w], posterior mean x scale

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        mm.load_models_gpu([vae.patcher], memory_required=vae.memory_used_decode(latent.shape, vae.vae_dtype))
        z = (latent.float() / self.latent_scale).to(vae.device, vae.vae_dtype)  # [B,4,h,w]
        return vae.first_stage_model.decode(z).float()  # [B,3,H,W], unclamped

    def denoise(self, latent: torch.Tensor, timestep: int | torch.Tensor) -> torch.Tensor:
        patcher, batch = self.patcher, latent.shape[0]
        mm.load_models_gpu([patcher], memory_required=patcher.memory_required(latent.shape))
        device = mm.get_torch_device()
        t = timestep_batch(timestep, batch, device).float()  # [B], raw (0, -1, or the family's timestep)
        x, labels = self.family.unet_inputs(latent.to(device))  # [B,4|8,h,w] (E2E-FT: zeros appended), [B,n]
        extra = {} if labels is None else {"y": labels}  # Lotus' task label through the LDM UNet's ADM input
        context = self.context.to(device).expand(batch, -1, -1)  # [B,T,D]
        out = patcher.model.apply_model(x, t, c_crossattn=context, transformer_options={}, **extra)
        return out.float()  # [B,4,h,w]
