"""Pixel-space helpers: channel canonicalisation, long-edge resizing, padding and its undoing.

Shape letters: B batch, C channels, H x W input size, PH x PW processing size, QH x QW padded size.
All functions take and return float tensors ``[B, C, H, W]`` and keep their device and dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """Grey (C=1), grey+alpha (C=2), RGB (C=3) or RGBA (C=4) ``[B,C,H,W]`` to RGB ``[B,3,H,W]``.

    Alpha is dropped: depth is estimated from the colour content as it is.
    """
    channels = images.shape[1]
    if channels in (1, 2):
        return images[:, :1].expand(-1, 3, -1, -1)  # [B,3,H,W]
    if channels in (3, 4):
        return images[:, :3]  # [B,3,H,W]
    raise ValueError(f"`images` must have 1, 2, 3 or 4 channels, got {channels} (shape {tuple(images.shape)})")


def processing_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """Size whose long edge is ``resolution`` with the aspect ratio kept; ``resolution`` 0 keeps (H, W)."""
    if resolution == 0:
        return height, width
    scale = resolution / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize(images: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize to ``size`` = (H, W): bilinear, antialiased when shrinking, or ``"nearest-exact"``; a no-op at the
    same size."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    dtype = images.dtype
    work = images if dtype in (torch.float32, torch.float64) else images.float()
    if mode == "nearest-exact":
        return F.interpolate(work, size=size, mode="nearest-exact").to(dtype)
    out = F.interpolate(work, size=size, mode="bilinear", align_corners=False, antialias=True)
    return out.to(dtype)


def pad_to_multiple(images: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad bottom and right by edge replication so H and W are multiples of ``multiple``.

    Returns the padded ``[B,C,QH,QW]`` tensor and the padding (pad_h, pad_w) to give to :func:`unpad`.
    """
    height, width = images.shape[-2:]
    pad_h = (-height) % multiple
    pad_w = (-width) % multiple
    if pad_h == 0 and pad_w == 0:
        return images, (0, 0)
    padded = F.pad(images, (0, pad_w, 0, pad_h), mode="replicate")  # [B,C,QH,QW]
    return padded, (pad_h, pad_w)


def unpad(images: torch.Tensor, padding: tuple[int, int]) -> torch.Tensor:
    """Remove bottom/right padding added by :func:`pad_to_multiple`."""
    pad_h, pad_w = padding
    height, width = images.shape[-2:]
    return images[..., : height - pad_h, : width - pad_w]  # [B,C,PH,PW]
