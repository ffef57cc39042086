"""Training targets in depth space: percentile normalisation of GT depth, and teacher disparity -> depth.

Both produce maps in [-1,1] (near = -1, far = +1) that the VAE encodes into target latents (docs/method.md).
Maps are ``[1,H,W]`` (or ``[H,W]``) float tensors; masks are bool tensors of the same shape.
"""

from __future__ import annotations

import torch

from .stats import quantiles


def normalize_depth(depth: torch.Tensor, valid: torch.Tensor, low: float = 0.02,
                    high: float = 0.98) -> tuple[torch.Tensor, torch.Tensor]:
    """Map the ``low``/``high`` quantiles of valid positive depth to -1/+1 and clip (Marigold's normaliser).

    Returns ``(normalised, valid)``. An image with no valid pixel, or a flat one, comes back all zeros with an
    all-False mask, so the loss ignores it instead of dividing by zero.
    """
    if depth.shape != valid.shape:
        raise ValueError(f"`depth` and `valid` must have the same shape, got {tuple(depth.shape)} and "
                         f"{tuple(valid.shape)}")
    depth = depth.float()
    valid = valid.bool() & torch.isfinite(depth) & (depth > 0)
    if not valid.any():
        return torch.zeros_like(depth), valid
    values = depth[valid]
    d_low, d_high = quantiles(values, (low, high))
    if not d_high > d_low:
        return torch.zeros_like(depth), torch.zeros_like(valid)
    normalised = ((depth - d_low) / (d_high - d_low) * 2.0 - 1.0).clamp(-1.0, 1.0)
    return torch.where(valid, normalised, torch.zeros_like(normalised)), valid


def disparity_to_depth_target(disparity: torch.Tensor, eps: float = 1e-3, low: float = 0.02,
                              high: float = 0.98) -> tuple[torch.Tensor, torch.Tensor]:
    """A depth-like [-1,1] target from a teacher's relative disparity (Depth Anything: large = near, sky ~ 0).

    1. Disparities below ``eps`` x the 99th percentile are *capped* (sky, very far): they have no usable depth.
    2. The rest is inverted to depth and normalised with its own ``low``/``high`` quantiles to [-1,1], clipped.
    3. Capped pixels saturate at +1 (farthest) and stay valid.

    The quantiles are taken over the uncapped pixels only: with the capped ones included, any photo whose sky
    covers more than ``1 - high`` of it would put the high quantile on the sky and squeeze every other pixel into
    a sliver next to -1. Returns ``(target, valid)``; only non-finite teacher pixels are invalid (and an image
    whose uncapped part is flat, which has no usable target, comes back all invalid). Project choice, see
    docs/method.md.
    """
    disparity = disparity.float()
    valid = torch.isfinite(disparity)
    if not valid.any():
        return torch.zeros_like(disparity), valid
    top = quantiles(disparity[valid], (0.99,))[0]
    if not top > 0:
        return torch.zeros_like(disparity), torch.zeros_like(valid)
    floor = eps * top
    capped = valid & (disparity < floor)  # sky and very far: saturate at +1
    measured = valid & ~capped  # non-empty: at least 1 % of the valid pixels reach `top` > `floor`
    depth = 1.0 / torch.where(measured, disparity, top)  # finite everywhere; only `measured` is used below
    d_low, d_high = quantiles(depth[measured], (low, high))
    if not d_high > d_low:
        return torch.zeros_like(disparity), torch.zeros_like(valid)
    normalised = ((depth - d_low) / (d_high - d_low) * 2.0 - 1.0).clamp(-1.0, 1.0)
    normalised = torch.where(capped, torch.ones_like(normalised), normalised)
    return torch.where(valid, normalised, torch.zeros_like(normalised)), valid
