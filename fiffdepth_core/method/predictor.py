"""FiffDepth inference: one deterministic UNet pass at t = 0 on the RGB latent (docs/method.md, steps 1-6).

The other one-step families (Lotus-D, GenPercept, Marigold-E2E-FT) run through the same steps; where they differ
(timestep, output conversion, decode rule, min-max, disparity, resize back) the predictor asks the backbone's
:class:`~fiffdepth_core.method.families.Family` record and nothing else.

Shape letters: B images, H x W input size, PH x PW processing size, QH x QW padded size (multiples of
``pad_multiple``), h x w latent size (QH/8 x QW/8).

Every entry point (ComfyUI node, CLI, training validation, evaluation) calls :func:`predict_depth`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .backbone import Backbone
from .families import FIFFDEPTH
from .image import pad_to_multiple, processing_size, resize, to_rgb, unpad
from .tiling import TileConfig, tiled_decode, tiled_encode

log = logging.getLogger(__name__)

DEFAULT_PROCESSING_RESOLUTION = 768  # long edge in px: the official pipeline's default (from Marigold)
MAX_PROCESSING_RESOLUTION = 16384  # the largest long edge any entry point accepts
PASSES = ("detailed", "filtered")  # t = 0 (the paper's output), t = -1 (the learned low-pass filter)
PASS_TIMESTEPS = {"detailed": (0,), "filtered": (0, -1)}  # FiffDepth's; other families use their own timestep


class NonFiniteOutputError(RuntimeError):
    """The model produced NaN or inf (usually fp16 overflow)."""


def non_finite_message(dtype: torch.dtype) -> str:
    """What a NaN/inf result means for a UNet run in ``dtype``: overflow advice only where it can apply."""
    if dtype == torch.float16:
        return ("the model produced NaN/inf depth with the UNet in torch.float16: this usually means fp16 overflow; "
                "run in bf16 or fp32 instead")
    return (f"the model produced NaN/inf depth with the UNet in {dtype}, so this is not fp16 overflow: the "
            "checkpoint's weights (or its empty-prompt embedding) hold NaN/inf or are damaged; re-export or "
            "re-download the checkpoint")


@dataclass(frozen=True)
class PredictConfig:
    """How to run the pass. Every field has a default that reproduces the official pipeline."""

    processing_resolution: int = DEFAULT_PROCESSING_RESOLUTION  # long edge in px; 0 = native size
    pad_multiple: int = 64  # SD2's UNet halves the latent three times: 8 px x 2**3 (project choice, see docs/method.md)
    batch_size: int = 1  # images per model call
    depth_pass: str = "detailed"  # "detailed" (t = 0) or "filtered" (t = 0, then t = -1)
    tiles: TileConfig | None = None  # tiled VAE encode/decode for large images; None = whole image

    def __post_init__(self):
        check_int("processing_resolution", self.processing_resolution, 0, MAX_PROCESSING_RESOLUTION,
                  "0 keeps the native size")
        check_int("pad_multiple", self.pad_multiple, 8, 512, "SD VAEs need multiples of 8")
        if self.pad_multiple % 8:
            raise ValueError(f"`pad_multiple` must be a multiple of 8, got {self.pad_multiple}")
        check_int("batch_size", self.batch_size, 1, 4096)
        if self.depth_pass not in PASSES:
            raise ValueError(f"`depth_pass` must be one of {PASSES}, got {self.depth_pass!r}")


def check_int(name: str, value, low: int, high: int, hint: str = "") -> None:
    """Raise a ValueError/TypeError naming ``name`` unless ``low <= value <= high`` for an int ``value``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an integer, got {type(value).__name__} {value!r}")
    if not low <= value <= high:
        extra = f" ({hint})" if hint else ""
        raise ValueError(f"`{name}` must be between {low} and {high}{extra}, got {value}")


def check_images(images: torch.Tensor) -> None:
    """Validate a ``[B,C,H,W]`` float image batch in [0,1] with C in 1..4."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"`images` must be a torch.Tensor [B,C,H,W], got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] not in (1, 2, 3, 4) or images.shape[0] == 0:
        raise ValueError(f"`images` must have shape [B,C,H,W] with B >= 1 and C in 1..4, got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"`images` must be a float tensor with values in [0,1], got dtype {images.dtype}")
    if images.shape[-2] < 1 or images.shape[-1] < 1:
        raise ValueError(f"`images` must be at least 1x1 pixels, got {tuple(images.shape[-2:])}")
    low, high = (v.item() for v in torch.aminmax(images))  # one pass; NaN propagates, inf shows as min/max
    if low != low or high != high or abs(low) == float("inf") or abs(high) == float("inf"):
        raise ValueError("`images` contains NaN or inf values")
    if low < -1e-3 or high > 1 + 1e-3:
        raise ValueError(f"`images` values must lie in [0,1], got range [{low:.4g}, {high:.4g}]")


def latent_to_depth(decoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded ``[B,3,H,W]`` -> (depth ``[B,1,H,W]`` in [0,1], finite flag): channel mean, clip to [-1,1],
    map (x+1)/2. The flag is a 0-d bool tensor, so checking it can wait (no device sync per chunk); clipping
    alone would hide inf."""
    mean = decoded.mean(dim=1, keepdim=True)  # [B,1,H,W]
    return (mean.clamp(-1.0, 1.0) + 1.0) / 2.0, torch.isfinite(mean).all()


def _chunks(total: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, total)) for i in range(0, total, size)]


def predict_depth(backbone: Backbone, images: torch.Tensor, config: PredictConfig = PredictConfig(),
                  progress: Callable[[int, int], None] | None = None,
                  interrupt: Callable[[], None] | None = None,
                  fallback: Callable[[], Backbone] | None = None) -> torch.Tensor:
    """Affine-invariant depth in [0,1] (0 = near, 1 = far) for a batch of same-sized images.

    Args:
        backbone: a :class:`~fiffdepth_core.method.backbone.Backbone` (standalone or ComfyUI).
        images: ``[B,C,H,W]`` float in [0,1]; C = 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA).
        config: resolution, padding, batching and pass; see :class:`PredictConfig`.
        progress: called as ``progress(steps_done, steps_total)`` after each model call.
        interrupt: called before each model call; raise from it to cancel.
        fallback: when the model overflows (NaN/inf, typically fp16), the run is repeated once on the backbone
            this returns (e.g. ``backbone.upcast``), with a warning; without it the error is raised.

    Returns:
        ``[B,H,W]`` float32 on the device of ``images``: the raw depth of the reference pipeline.
    """
    check_images(images)
    family = getattr(backbone, "family", FIFFDEPTH)
    if config.depth_pass == "filtered" and not family.filter_pass:
        raise ValueError(f"`depth_pass` 'filtered' (the t = -1 filter pass) exists only for FiffDepth checkpoints; "
                         f"this backbone runs {family.title}: use 'detailed'")
    with torch.inference_mode():
        try:
            return _predict(backbone, images, config, progress, interrupt)
        except NonFiniteOutputError as error:
            if fallback is None:
                raise
            log.warning("%s: running again in fp32", error)
            return _predict(fallback(), images, config, progress, interrupt)


def _predict(backbone: Backbone, images: torch.Tensor, config: PredictConfig, progress, interrupt) -> torch.Tensor:
    batch, _, height, width = images.shape
    family = getattr(backbone, "family", FIFFDEPTH)
    timesteps = (family.timestep, *PASS_TIMESTEPS[config.depth_pass][1:])
    chunks = _chunks(batch, config.batch_size)
    total_steps = len(chunks) * (2 + len(timesteps))
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total_steps)

    def check() -> None:
        if interrupt is not None:
            interrupt()

    # The stages run over all chunks in turn (all encodes, then all UNet passes, then all decodes), so a host
    # that keeps one model on the GPU at a time swaps models twice per call, not per chunk.
    # 1-2. RGB in [0,1] -> [-1,1]; long edge to the processing resolution; replicate-pad to the multiple.
    # 3. Model invocation: VAE encoder. Latent = posterior mean x scale.
    proc_h, proc_w = processing_size(height, width, config.processing_resolution)
    latents, padding = [], (0, 0)
    for part in chunks:
        check()
        rgb = to_rgb(images[part]).to(backbone.device, torch.float32).contiguous()  # [b,3,H,W], one memory layout
        rgb = resize(rgb, (proc_h, proc_w)) * 2.0 - 1.0  # [b,3,PH,PW]
        rgb, padding = pad_to_multiple(rgb, config.pad_multiple)  # [b,3,QH,QW]
        latents.append(_encode(backbone, rgb, config.tiles))  # [b,4,h,w]
        step()

    # 4. Model invocation: UNet at t = 0 (and t = -1 for the filtered pass). The output is the depth latent
    #    (other families: at their timestep, the output converted to the depth latent by their record).
    for i in range(len(latents)):
        for t in timesteps:
            check()
            latents[i] = family.depth_latent(backbone.denoise(latents[i], t), latents[i], t)  # [b,4,h,w]
            step()

    # 5. Model invocation: VAE decoder (unclamped); channel mean, clip, map to [0,1].
    # 6. Remove the padding, resize back to the input size, clip to [0,1].
    out = torch.empty((batch, height, width), dtype=torch.float32, device=images.device)
    finite = []
    for part, latent in zip(chunks, latents):
        check()
        depth, ok = family.depth_from_decoded(_decode(backbone, latent, config.tiles))  # [b,1,QH,QW]
        finite.append(ok)
        depth = family.stretch(unpad(depth, padding))  # [b,1,PH,PW]; E2E-FT: per-image min-max
        depth = resize(depth, (height, width), family.resize_back).clamp(0.0, 1.0)  # [b,1,H,W]
        depth = family.as_depth(depth)  # disparity checkpoints: 1 - x, so 0 = near
        out[part].copy_(depth[:, 0], non_blocking=True)  # [b,H,W]; the flag check below synchronises
        step()
    if not torch.stack(finite).all():  # one sync for the whole call
        raise NonFiniteOutputError(non_finite_message(backbone.dtype))
    return out


def predict_depth_latent(backbone: Backbone, latent: torch.Tensor, depth_pass: str = "detailed") -> torch.Tensor:
    """Step 4 alone: the depth latent ``[B,4,h,w]`` (scaled) of scaled RGB latents ``[B,4,h,w]``, by the
    backbone's family (its timestep, class label, input assembly and output conversion)."""
    family = getattr(backbone, "family", FIFFDEPTH)
    if depth_pass not in PASSES or (depth_pass == "filtered" and not family.filter_pass):
        allowed = PASSES if family.filter_pass else PASSES[:1]
        raise ValueError(f"`depth_pass` must be one of {allowed} for {family.title}, got {depth_pass!r}")
    with torch.inference_mode():
        for t in (family.timestep, *PASS_TIMESTEPS[depth_pass][1:]):
            latent = family.depth_latent(backbone.denoise(latent, t), latent, t)  # [B,4,h,w]
    return latent


def _encode(backbone: Backbone, rgb: torch.Tensor, tiles: TileConfig | None) -> torch.Tensor:
    if tiles is not None and tiles.applies(rgb.shape[-2:]):
        return tiled_encode(backbone.encode, rgb, tiles)
    return backbone.encode(rgb)


def _decode(backbone: Backbone, latent: torch.Tensor, tiles: TileConfig | None) -> torch.Tensor:
    if tiles is not None and tiles.applies((latent.shape[-2] * 8, latent.shape[-1] * 8)):
        return tiled_decode(backbone.decode, latent, tiles)
    return backbone.decode(latent)
