"""Your own RGB-D data: a folder of images with matching depth maps and optional validity masks.

Layout under ``root`` (sub-folders allowed; files pair up by their path without extension)::

    rgb/<name>.<png|jpg|jpeg|webp|bmp|tif|tiff>
    depth/<name>.png      integer units x depth_scale = metres (16-bit; default scale 0.001: millimetres)
    depth/<name>.npy      float metres
    depth/<name>.exr      float metres (channel Z, or the first one)
    mask/<name>.png       optional; nonzero = valid

Valid pixels: finite, ``min_depth < d < max_depth``, and nonzero in the mask when there is one. Each sample is
resized to the training size (default 480x640); the depth is normalised per image to [-1,1] first.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from fiffdepth_core.fileio import IMAGE_EXTENSIONS, load_image

from .common import (
    KeyedDataset,
    SampleError,
    aug_rng,
    check_dir,
    check_range,
    check_size,
    depth_range_mask,
    depth_sample,
    draw_flip,
)
from .raster_io import DEPTH_SUFFIXES, read_depth, read_rgb

logger = logging.getLogger(__name__)

DEFAULT_SIZE = (480, 640)


def _by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """Files under ``folder`` with one of ``suffixes``, keyed by relative path without extension."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in suffixes:
            continue
        stem = path.relative_to(folder).with_suffix("").as_posix()
        if stem in found:
            raise ValueError(f"two files for the sample {stem!r} in {folder}: {found[stem].name} and {path.name}; "
                             "keep one")
        found[stem] = path
    return found


def pair_rgbd(root: Path) -> list[tuple[str, Path, Path, Path | None]]:
    """``(name, rgb, depth, mask or None)`` for every RGB image with a depth map, sorted by name."""
    rgb = _by_stem(check_dir(root / "rgb", "root/rgb"), IMAGE_EXTENSIONS)
    depth = _by_stem(check_dir(root / "depth", "root/depth"), DEPTH_SUFFIXES)
    masks = _by_stem(root / "mask", (".png",)) if (root / "mask").is_dir() else {}
    names = sorted(set(rgb) & set(depth))
    unmatched = len(rgb) - len(names)
    if unmatched:
        logger.warning("%s: %d RGB images have no depth map and are left out", root, unmatched)
    if not names:
        raise ValueError(f"`root` {str(root)!r} has no RGB image with a matching depth map "
                         f"(rgb/<name>.<image ext> + depth/<name>.{{png,npy,exr}})")
    return [(name, rgb[name], depth[name], masks.get(name)) for name in names]


class RGBDFolderDataset(KeyedDataset):
    """A user's RGB-D folder (see the module docstring), normalised per image to [-1,1]."""

    def __init__(self, root, size: tuple[int, int] | None = DEFAULT_SIZE, hflip: bool = True,
                 depth_scale: float = 1e-3, min_depth: float = 0.0, max_depth: float | None = None):
        self.root = check_dir(root, "root")
        self.size = check_size(DEFAULT_SIZE if size is None else size)
        self.hflip = bool(hflip)
        self.depth_scale = check_range("depth_scale", depth_scale, low=1e-12)
        self.min_depth = check_range("min_depth", min_depth)
        self.max_depth = math.inf if max_depth is None else check_range("max_depth", max_depth, low=self.min_depth)
        self.items = pair_rgbd(self.root)

    def __len__(self) -> int:
        return len(self.items)

    def describe(self, index: int) -> str:
        name, rgb, depth, _ = self.items[index]
        return f"{name} ({rgb.name} / {depth.name})"

    def load(self, index: int, aug_seed: int) -> dict:
        name, rgb_path, depth_path, mask_path = self.items[index]
        flip = draw_flip(aug_rng(aug_seed)) and self.hflip
        rgb = read_rgb(rgb_path)  # [3,H,W]
        depth = read_depth(depth_path, self.depth_scale)  # [1,H,W] metres
        valid = depth_range_mask(depth, self.min_depth, self.max_depth)  # [1,H,W]
        if mask_path is not None:
            mask = load_image(mask_path)[:1] > 0  # [1,H,W]
            if mask.shape != valid.shape:
                raise SampleError(f"mask size {tuple(mask.shape[-2:])} != depth size {tuple(valid.shape[-2:])}")
            valid &= mask
        depth = torch.nan_to_num(depth, nan=0.0, posinf=0.0, neginf=0.0)
        return depth_sample(rgb, depth, valid, self.size, flip, name)
