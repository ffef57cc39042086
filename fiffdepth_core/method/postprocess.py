"""Output conventions derived from raw depth: ControlNet depth and a colour preview.

Raw depth ``[B,H,W]`` is affine-invariant, 0 = near, 1 = far. Depth ControlNets were trained on MiDaS-style
maps: near = white, robustly normalised. Per-image normalisation flickers in video, so normalisation can be
taken over the whole batch instead.
"""

from __future__ import annotations

import torch

from .stats import quantiles

# ColorBrewer "Spectral" (11 classes), the colormap the reference pipeline uses for previews: red = near.
SPECTRAL_HEX = ("9e0142", "d53e4f", "f46d43", "fdae61", "fee08b", "ffffbf",
                "e6f598", "abdda4", "66c2a5", "3288bd", "5e4fa2")

NORMALIZATIONS = ("per_image", "whole_batch")


def controlnet_depth(depth: torch.Tensor, normalization: str = "per_image", low: float = 0.02,
                     high: float = 0.98, bounds: torch.Tensor | None = None) -> torch.Tensor:
    """ControlNet-ready depth ``[B,H,W]`` in [0,1], near = white (1).

    The ``low`` and ``high`` quantiles of ``depth`` (per image, or over the whole batch for video) map to
    1 and 0; values beyond them are clipped. A flat map (equal quantiles) becomes white. ``bounds`` (the two
    depth values, e.g. from :func:`whole_run_bounds` over images of different sizes) overrides the quantiles.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"`normalization` must be one of {NORMALIZATIONS}, got {normalization!r}")
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"`low` and `high` must satisfy 0 <= low < high <= 1, got low={low}, high={high}")
    if depth.ndim != 3:
        raise ValueError(f"`depth` must have shape [B,H,W], got {tuple(depth.shape)}")
    depth = depth.float()
    if bounds is None and normalization == "whole_batch":
        bounds = quantiles(depth, (low, high))  # [2]
    if bounds is not None:
        bounds = bounds.to(depth.device).expand(depth.shape[0], 2)  # [B,2]
    else:
        bounds = torch.stack([quantiles(d, (low, high)) for d in depth])  # [B,2]
    lo = bounds[:, 0, None, None]  # [B,1,1]
    span = (bounds[:, 1] - bounds[:, 0]).clamp_min(1e-12)[:, None, None]  # [B,1,1]
    return 1.0 - ((depth - lo) / span).clamp(0.0, 1.0)  # [B,H,W]


def whole_run_bounds(depths, low: float = 0.02, high: float = 0.98) -> torch.Tensor:
    """The ``low``/``high`` quantiles over several depth maps of any sizes: ``[2]`` bounds for
    :func:`controlnet_depth`, so a whole folder or video is normalised as one."""
    return quantiles(torch.cat([d.reshape(-1).float().cpu() for d in depths]), (low, high))


def colorize(depth: torch.Tensor) -> torch.Tensor:
    """Spectral colour preview ``[B,3,H,W]`` in [0,1] of depth ``[B,H,W]`` in [0,1] (red = near, violet = far)."""
    stops = torch.tensor([[int(h[i:i + 2], 16) / 255.0 for i in (0, 2, 4)] for h in SPECTRAL_HEX],
                         dtype=torch.float32, device=depth.device)  # [11,3]
    pos = depth.float().clamp(0.0, 1.0) * (len(SPECTRAL_HEX) - 1)  # [B,H,W]
    index = pos.floor().long().clamp(max=len(SPECTRAL_HEX) - 2)
    frac = (pos - index)[..., None]  # [B,H,W,1]
    rgb = stops[index] * (1.0 - frac) + stops[index + 1] * frac  # [B,H,W,3]
    return rgb.permute(0, 3, 1, 2).contiguous()  # [B,3,H,W]
