"""Real photos with cached Depth Anything V2 pseudo labels, for the t = -1 (filter distillation) branch.

Each photo and its float16 disparity label are resized together so the short side covers the training size,
cropped at a random position (from ``aug_seed``), flipped, and only then turned into the depth-like target
with ``disparity_to_depth_target`` (so the percentiles are those of the crop the model sees).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch.nn.functional as F

from fiffdepth_core.method import disparity_to_depth_target

from .common import (
    KeyedDataset,
    SampleError,
    aug_rng,
    check_dir,
    check_range,
    check_size,
    draw_flip,
    resize_rgb,
    to_signed,
)
from .image_sources import index_images, label_path, load_label, read_image

DEFAULT_SIZE = (480, 640)


def cover_size(height: int, width: int, size: tuple[int, int]) -> tuple[int, int]:
    """The smallest aspect-preserving size that covers ``size`` (short side resized to fit)."""
    scale = max(size[0] / height, size[1] / width)
    return max(size[0], math.ceil(height * scale - 1e-6)), max(size[1], math.ceil(width * scale - 1e-6))


def crop_offsets(rng, full: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """Uniform random (top, left) of a ``size`` window inside ``full``."""
    top = int(rng.integers(0, full[0] - size[0] + 1))
    left = int(rng.integers(0, full[1] - size[1] + 1))
    return top, left


class RealPhotosDataset(KeyedDataset):
    """Photos (folder or WebDataset shards) + cached teacher disparity -> rgb, depth-like target, valid."""

    def __init__(self, images, labels, size: tuple[int, int] | None = DEFAULT_SIZE, hflip: bool = True,
                 eps: float = 1e-3):
        self.labels = check_dir(labels, "labels")
        self.refs = index_images(images)
        self.size = check_size(DEFAULT_SIZE if size is None else size)
        self.hflip = bool(hflip)
        self.eps = check_range("eps", eps, low=0.0, high=1.0)

    def __len__(self) -> int:
        return len(self.refs)

    def describe(self, index: int) -> str:
        ref = self.refs[index]
        return ref.id if ref.offset < 0 else f"{ref.id} in {Path(ref.path).name}"

    def load(self, index: int, aug_seed: int) -> dict:
        ref = self.refs[index]
        rng = aug_rng(aug_seed)
        flip = draw_flip(rng) and self.hflip
        disparity = load_label(label_path(self.labels, ref))  # [1,H,W]
        rgb = read_image(ref)  # [3,H,W]
        if rgb.shape[-2:] != disparity.shape[-2:]:
            raise SampleError(f"image size {tuple(rgb.shape[-2:])} != label size {tuple(disparity.shape[-2:])}")
        full = cover_size(*rgb.shape[-2:], self.size)
        rgb = resize_rgb(rgb, full)  # [3,h,w]
        disparity = F.interpolate(disparity[None], size=full, mode="bilinear", align_corners=False,
                                  antialias=True)[0] if full != tuple(disparity.shape[-2:]) else disparity  # [1,h,w]
        top, left = crop_offsets(rng, full, self.size)
        window = (slice(None), slice(top, top + self.size[0]), slice(left, left + self.size[1]))
        rgb, disparity = rgb[window], disparity[window]  # [3,H,W], [1,H,W]
        if flip:
            rgb, disparity = rgb.flip(-1), disparity.flip(-1)
        target, valid = disparity_to_depth_target(disparity, eps=self.eps)  # [1,H,W] each
        return {"rgb": to_signed(rgb).contiguous(), "depth": target.contiguous(), "valid": valid.contiguous(),
                "name": ref.id}
