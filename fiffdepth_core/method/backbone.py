"""The three verbs FiffDepth needs from a Stable Diffusion stack, and the standalone (diffusers) backbone.

A backbone turns pixels into *scaled* latents and back, and runs the UNet once at a raw integer timestep:

| verb | in | out |
| --- | --- | --- |
| ``encode(rgb)`` | ``[B,3,H,W]`` in [-1,1], H and W multiples of 8 | ``[B,4,h,w]`` = posterior mean x scale |
| ``denoise(latent, t)`` | scaled latent, int timestep (0, -1, or a ``[B]`` tensor) | raw UNet output ``[B,4,h,w]`` |
| ``decode(latent)`` | scaled latent | unclamped VAE decode of latent / scale, ``[B,3,H,W]`` |

A backbone carries the :class:`~fiffdepth_core.method.families.Family` it runs (``backbone.family``); ``denoise`` builds the
UNet call with :meth:`~fiffdepth_core.method.families.Family.unet_inputs` (E2E-FT's zero latent concatenated, Lotus' class
label), so for FiffDepth the raw output is the depth latent itself and for the others the predictor converts it.
Outputs are float32 on the backbone's device. No verb switches autograd off: training calls ``denoise`` with
gradients, inference wraps the calls in ``torch.inference_mode``. The ComfyUI backbone lives in ``nodes/``.
"""

from __future__ import annotations

from typing import Protocol

import torch

from .families import FIFFDEPTH, Family


class Backbone(Protocol):
    """What the predictor, the trainer and the evaluator need from a model stack."""

    device: torch.device
    dtype: torch.dtype
    family: Family

    def encode(self, rgb: torch.Tensor) -> torch.Tensor: ...

    def denoise(self, latent: torch.Tensor, timestep: int | torch.Tensor) -> torch.Tensor: ...

    def decode(self, latent: torch.Tensor) -> torch.Tensor: ...


def timestep_batch(timestep: int | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    """An int64 ``[B]`` timestep tensor; -1 is kept as is (the UNet's sinusoidal embedding takes it)."""
    t = torch.as_tensor(timestep, device=device)
    if t.is_floating_point():
        raise TypeError(f"`timestep` must be an integer or an integer tensor, got dtype {t.dtype}")
    t = t.to(torch.int64)
    if t.ndim == 0:
        t = t.expand(batch)  # [B]
    if t.shape != (batch,):
        raise ValueError(f"`timestep` must be a scalar or have shape ({batch},), got {tuple(t.shape)}")
    return t


def unwrap_module(module: torch.nn.Module) -> torch.nn.Module:
    """Peel DistributedDataParallel (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        inner = getattr(module, "module", None) or getattr(module, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            return module
        module = inner


class StandaloneBackbone:
    """Diffusers ``UNet2DConditionModel`` + ``AutoencoderKL`` with a fixed empty-prompt embedding.

    ``empty_embed`` is the text encoder's output for "" without padding, ``[1, 2, D]``. The models may live
    in different dtypes (a trainable fp32 UNet beside a bf16 VAE); each verb casts its input to its model.
    """

    def __init__(self, unet: torch.nn.Module, vae: torch.nn.Module, empty_embed: torch.Tensor,
                 latent_scale: float | None = None, channels_last: bool = False, family: Family = FIFFDEPTH):
        core = unwrap_module(unet)  # `unet` may be wrapped (DDP, torch.compile); forward goes through the wrapper
        cross_dim = core.config.cross_attention_dim
        if empty_embed.ndim != 3 or empty_embed.shape[0] != 1 or empty_embed.shape[2] != cross_dim:
            raise ValueError(f"`empty_embed` must have shape [1, T, {cross_dim}] (the UNet's cross-attention "
                             f"width), got {tuple(empty_embed.shape)}")
        self.unet = unet
        self.vae = vae
        self.latent_scale = float(latent_scale if latent_scale is not None else vae.config.scaling_factor)
        self.device = core.device
        self.dtype = core.dtype
        self.empty_embed = empty_embed.to(self.device, self.dtype, copy=True)  # [1,T,D], fresh aligned storage
        self.channels_last = channels_last
        self.family = family

    @property
    def vae_dtype(self) -> torch.dtype:
        return self.vae.dtype

    def to(self, device: str | torch.device) -> "StandaloneBackbone":
        """Move the models and the embedding to ``device`` in place (hosts that park idle models on the CPU)."""
        device = torch.device(device)
        self.unet.to(device)
        self.vae.to(device)
        self.empty_embed = self.empty_embed.to(device)
        self.device = unwrap_module(self.unet).device
        return self

    def upcast(self) -> "StandaloneBackbone":
        """An fp32 copy of this backbone (the recovery from an fp16 overflow); the VAE is kept unless it is fp16."""
        import copy

        unet = copy.deepcopy(unwrap_module(self.unet)).float()
        vae = copy.deepcopy(self.vae).float() if self.vae_dtype == torch.float16 else self.vae
        return StandaloneBackbone(unet, vae, self.empty_embed.float(), self.latent_scale, self.channels_last,
                                  self.family)

    def compile(self, mode: str | None = None) -> "StandaloneBackbone":
        """``torch.compile`` the UNet and the VAE encoder/decoder in place (opt-in).

        The first call at each new input size compiles (Inductor caches kernels on disk for later runs); later calls
        are faster. Measured compile times and speed-ups are in benchmarks/README.md.
        """
        self.unet = torch.compile(self.unet, mode=mode)
        self.vae.encoder = torch.compile(self.vae.encoder, mode=mode)
        self.vae.decoder = torch.compile(self.vae.decoder, mode=mode)
        return self

    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        posterior = self.vae.encode(self._layout(rgb.to(self.vae.device, self.vae_dtype))).latent_dist
        return posterior.mean.float() * self.latent_scale  # [B,4,h,w]

    def denoise(self, latent: torch.Tensor, timestep: int | torch.Tensor) -> torch.Tensor:
        batch = latent.shape[0]
        t = timestep_batch(timestep, batch, self.device)  # [B]
        context = self.empty_embed.expand(batch, -1, -1)  # [B,T,D]
        x, labels = self.family.unet_inputs(latent.to(self.device, self.dtype))  # [B,4|8,h,w], [B,n] or None
        extra = {} if labels is None else {"class_labels": labels}
        out = self.unet(self._layout(x), t, encoder_hidden_states=context, **extra).sample
        return out.float()  # [B,4,h,w]

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        z = (latent.float() / self.latent_scale).to(self.vae.device, self.vae_dtype)  # [B,4,h,w]
        return self.vae.decode(self._layout(z)).sample.float()  # [B,3,H,W]

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        """NHWC when channels-last was asked for; otherwise the tensor as it comes (as the reference passes it)."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
