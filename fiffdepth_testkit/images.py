"""Seeded stand-ins for photos."""

from __future__ import annotations

import torch


def seeded_images(batch: int, height: int, width: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """Smooth random images ``[B,C,H,W]`` in [0,1]: low-frequency structure plus a little noise, like photos."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand((batch, channels, max(2, height // 16), max(2, width // 16)), generator=gen)
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    noise = torch.rand((batch, channels, height, width), generator=gen) * 0.1
    return (smooth * 0.9 + noise).clamp(0, 1)
