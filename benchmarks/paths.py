"""The paths the harness times: the naive official-style pipeline, the standalone predictor, the ComfyUI host path.

Each path is a :class:`TimedPath`: ``run(images, clock)`` takes ``[B,3,H,W]`` float images in [0,1] and returns depth
``[B,H,W]`` float32 on the images' device, timing its encode / UNet / decode stages on ``clock``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fiffdepth_core.method import PredictConfig, predict_depth

DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64"}


def dtype_name(dtype: torch.dtype) -> str:
    return DTYPE_NAMES.get(dtype, str(dtype).replace("torch.", ""))


# --- the naive official-style pipeline (diffusers modules only, no FiffDepth code) -----------------------------

def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased (torchvision's ``resize(..., antialias=True)`` on tensors is this call)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False, antialias=True)


@torch.no_grad()
def naive_depth(unet, vae, empty_embed: torch.Tensor, images: torch.Tensor, processing_res: int, clock) -> torch.Tensor:
    """What the official ``fiffdepth/direct_pipeline.py`` does, written over plain diffusers modules.

    Long edge resized to ``processing_res`` (no padding), [0,1] -> [-1,1], ``vae.encoder`` + ``quant_conv`` mean x
    0.18215, UNet at t = 0 with the empty-prompt embedding repeated to ``[B,2,D]``, ``post_quant_conv`` +
    ``vae.decoder`` of latent / 0.18215, channel mean, clip to [-1,1], (x+1)/2, resize back, clip to [0,1].
    Everything runs in the UNet's dtype (the official pipeline has one dtype), under ``no_grad`` as it does.
    """
    device, dtype = unet.device, unet.dtype
    batch, _, height, width = images.shape
    scale = processing_res / max(height, width) if processing_res > 0 else 1.0
    size = (int(height * scale), int(width * scale))  # Marigold's resize_max_res truncates
    rgb = _resize(images[:, :3], size) * 2.0 - 1.0  # [B,3,PH,PW] in [-1,1]
    rgb = rgb.to(dtype).to(device)
    with clock.stage("encode"):
        moments = vae.quant_conv(vae.encoder(rgb))  # [B,8,h,w]
        mean, _ = torch.chunk(moments, 2, dim=1)
        latent = mean * 0.18215  # [B,4,h,w]
    context = empty_embed.to(device, dtype).repeat((batch, 1, 1))  # [B,2,D]
    timestep = torch.zeros(batch, device=device, dtype=torch.long)
    with clock.stage("unet"):
        depth_latent = unet(latent, timestep, encoder_hidden_states=context).sample  # [B,4,h,w]
    with clock.stage("decode"):
        stacked = vae.decoder(vae.post_quant_conv(depth_latent / 0.18215))  # [B,3,PH,PW]
        depth = stacked.mean(dim=1, keepdim=True)  # [B,1,PH,PW]
    depth = (torch.clip(depth, -1.0, 1.0) + 1.0) / 2.0
    depth = _resize(depth, (height, width)).clip(0, 1)  # [B,1,H,W]
    return depth[:, 0].float().to(images.device)  # [B,H,W]


# --- paths ---------------------------------------------------------------------------------------------------

@dataclass
class TimedPath:
    """One timed path. ``name`` is naive / standalone / host; ``label`` adds the variant (dtype, flags)."""

    name: str
    label: str
    unet_dtype: torch.dtype
    vae_dtype: torch.dtype
    run: Callable[[torch.Tensor, object], torch.Tensor]

    def describe(self) -> dict:
        return {"path": self.name, "label": self.label, "unet_dtype": dtype_name(self.unet_dtype),
                "vae_dtype": dtype_name(self.vae_dtype)}


def naive_path(unet, vae, embed: torch.Tensor, label: str | None = None) -> TimedPath:
    def run(images, clock):
        return naive_depth(unet, vae, embed, images, max(images.shape[-2:]), clock)

    return TimedPath("naive", label or f"naive {dtype_name(unet.dtype)}", unet.dtype, vae.dtype, run)


class TimedBackbone:
    """Forwards the three verbs of a backbone, timing each on the current clock."""

    def __init__(self, inner):
        self.inner = inner
        self.device, self.dtype = inner.device, inner.dtype
        self.clock = None

    def encode(self, rgb):
        with self.clock.stage("encode"):
            return self.inner.encode(rgb)

    def denoise(self, latent, timestep):
        with self.clock.stage("unet"):
            return self.inner.denoise(latent, timestep)

    def decode(self, latent):
        with self.clock.stage("decode"):
            return self.inner.decode(latent)


def predictor_path(name: str, label: str, backbone, unet_dtype: torch.dtype, vae_dtype: torch.dtype,
                   config_for: Callable[[torch.Tensor], PredictConfig] | None = None) -> TimedPath:
    """``predict_depth`` on ``backbone`` (standalone or host) at the images' own size, one chunk per call."""
    timed = TimedBackbone(backbone)

    def run(images, clock):
        config = config_for(images) if config_for else PredictConfig(
            processing_resolution=max(images.shape[-2:]), batch_size=images.shape[0])
        timed.clock = clock
        with torch.inference_mode():
            return predict_depth(timed, images, config)

    return TimedPath(name, label, unet_dtype, vae_dtype, run)


# --- the correctness guard -----------------------------------------------------------------------------------

FP32_TOLERANCE = 1e-4  # max |depth difference| for fp32 paths; fp64 likewise
HALF_EPS_FACTOR = 16  # half precision: 16 x machine epsilon of the least precise dtype involved


def tolerance(*dtypes: torch.dtype) -> float:
    """Allowed max |depth difference| from the fp32 reference for a path computing in ``dtypes``.

    fp32: 1e-4. Half precision: 16 x eps of the coarsest dtype (fp16: 0.0156, bf16: 0.125). Depth lives in [0,1]
    and is a channel mean of a ~30-layer decoder's output, so per-op rounding (eps/2) is amplified, while wrong
    maths (scale, timestep, clamping) gives errors of order 0.1-1 (measured figures: benchmarks/README.md). The
    bound catches overflow and drift, not the last bit; the fp32 check is the exactness check.
    """
    coarsest = max(dtypes, key=lambda d: torch.finfo(d).eps)
    if torch.finfo(coarsest).eps <= torch.finfo(torch.float32).eps:
        return FP32_TOLERANCE
    return HALF_EPS_FACTOR * torch.finfo(coarsest).eps


def guard(depth: torch.Tensor, reference: torch.Tensor, tol: float) -> dict:
    """Compare a path's depth with the reference; ``valid`` is False on NaN/inf or a max |diff| over ``tol``."""
    diff = (depth.float().cpu() - reference.float().cpu()).abs()
    finite = bool(torch.isfinite(depth).all())
    max_diff = float(diff.max()) if finite else float("inf")
    return {"max_abs_diff": max_diff, "mean_abs_diff": float(diff.mean()) if finite else float("inf"),
            "tolerance": tol, "valid": finite and max_diff <= tol}
