"""Procedural datasets for debugging and smoke tests: no files, any size, exact depth, deterministic.

- ``ProceduralDataset`` (synthetic branch): a rendered scene's RGB + planar depth, normalised like GT depth.
- ``ProceduralRealDataset`` (real branch stand-in): the same RGB + a fake teacher disparity made from the GT
  (1/depth, sky = 0, blurred, affine-distorted), turned into the target by ``disparity_to_depth_target``
  exactly as cached Depth Anything labels are.

Scene ``index`` and the dataset ``seed`` fix the scene; ``aug_seed`` only drives the flip.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fiffdepth_core.method import disparity_to_depth_target

from .common import KeyedDataset, aug_rng, check_size, depth_sample, draw_flip, flip_sample, to_signed
from .procedural_scene import render

DEFAULT_SIZE = (480, 640)


def _check_length(length) -> int:
    if int(length) < 1:
        raise ValueError(f"`length` must be >= 1, got {length}")
    return int(length)


class ProceduralDataset(KeyedDataset):
    """Rendered RGB-D scenes, ``length`` of them, at the training size."""

    def __init__(self, size: tuple[int, int] | None = DEFAULT_SIZE, hflip: bool = True, length: int = 10000,
                 seed: int = 0):
        self.size = check_size(DEFAULT_SIZE if size is None else size)
        self.hflip = bool(hflip)
        self.length = _check_length(length)
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.length

    def describe(self, index: int) -> str:
        return f"procedural/{index:08d}"

    def render(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """RGB ``[3,H,W]`` in [0,1] and depth ``[1,H,W]`` metres (inf = sky) of scene ``index``."""
        rgb, depth = render(self.size[0], self.size[1], index, self.seed)
        return torch.from_numpy(rgb), torch.from_numpy(depth)[None]

    def load(self, index: int, aug_seed: int) -> dict:
        flip = draw_flip(aug_rng(aug_seed)) and self.hflip
        rgb, depth = self.render(index)
        valid = torch.isfinite(depth)  # [1,H,W]
        depth = torch.where(valid, depth, torch.zeros_like(depth))
        return depth_sample(rgb, depth, valid, self.size, flip, self.describe(index))


def fake_teacher_disparity(depth: torch.Tensor, index: int, seed: int) -> torch.Tensor:
    """A Depth-Anything-like disparity ``[1,H,W]`` from GT depth ``[1,H,W]``: 1/depth (sky 0), blurred, a*x + b."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index), 7])
    disparity = torch.where(torch.isfinite(depth) & (depth > 0), 1.0 / depth, torch.zeros_like(depth))
    height, width = depth.shape[-2:]
    factor = max(1, min(height, width) // 16)
    coarse = F.avg_pool2d(disparity[None], kernel_size=factor, ceil_mode=True)  # [1,1,h,w]
    blurred = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0]  # [1,H,W]
    disparity = 0.5 * disparity + 0.5 * blurred  # keep edges, lose detail
    peak = disparity.max().clamp_min(1e-6)
    scale, shift = rng.uniform(0.5, 20.0), rng.uniform(0.0, 0.05)
    return (disparity / peak + shift) * scale


class ProceduralRealDataset(ProceduralDataset):
    """Rendered RGB + target from a fake teacher disparity (see ``fake_teacher_disparity``)."""

    def describe(self, index: int) -> str:
        return f"procedural_real/{index:08d}"

    def load(self, index: int, aug_seed: int) -> dict:
        flip = draw_flip(aug_rng(aug_seed)) and self.hflip
        rgb, depth = self.render(index)
        target, valid = disparity_to_depth_target(fake_teacher_disparity(depth, index, self.seed))
        sample = {"rgb": to_signed(rgb), "depth": target, "valid": valid, "name": self.describe(index)}
        return flip_sample(sample) if flip else sample
