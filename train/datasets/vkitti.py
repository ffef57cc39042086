"""Virtual KITTI 2: RGB jpg + centimetre uint16 depth PNG, KITTI-benchmark crop to 352x1216.

Layout under ``root`` (Marigold's, i.e. the official rgb and depth archives extracted side by side)::

    rgb/SceneXX/<variation>/frames/rgb/Camera_N/rgb_NNNNN.jpg
    depth/SceneXX/<variation>/frames/depth/Camera_N/depth_NNNNN.png

driven by a Marigold split file (``vkitti_train.txt``) or, without one, by scanning ``root`` for
``.../frames/rgb/Camera_*/rgb_*.jpg``. Depth is centimetres (/100); valid 1e-5 < d < 80 m, so the 655.35 m sky
is invalid. The crop keeps the bottom 352 rows, centred horizontally (Marigold's ``kb_crop``); the sample is then
resized to the training size (default: keep 352x1216).
"""

from __future__ import annotations

import logging
from pathlib import Path

from .common import (PairedFilesDataset, SampleError, aug_rng, check_dir, check_file, check_range, check_size,
                     depth_range_mask, depth_sample, draw_flip)
from .raster_io import read_pair_split, read_png_units, read_rgb

logger = logging.getLogger(__name__)

KB_CROP = (352, 1216)
DEFAULT_SIZE = KB_CROP
CM_TO_M = 1e-2


def kb_crop_box(height: int, width: int) -> tuple[int, int]:
    """(top, left) of the KITTI-benchmark crop: bottom 352 rows, 1216 columns centred."""
    crop_h, crop_w = KB_CROP
    if height < crop_h or width < crop_w:
        raise SampleError(f"image {height}x{width} is smaller than the KB crop {crop_h}x{crop_w}")
    return height - crop_h, (width - crop_w) // 2


def depth_path_for(rgb_rel: Path) -> Path:
    """The depth file of a vKITTI RGB file: ``rgb/.../frames/rgb/...`` -> ``depth/.../frames/depth/...``."""
    parts = list(rgb_rel.parts)
    if parts[0] == "rgb":
        parts[0] = "depth"
    for i in range(len(parts) - 1):
        if parts[i] == "frames" and parts[i + 1] == "rgb":
            parts[i + 1] = "depth"
    name = parts[-1]
    parts[-1] = "depth_" + name[len("rgb_"):].rsplit(".", 1)[0] + ".png"
    return Path(*parts)


def scan_vkitti(root: Path) -> list[tuple[str, str]]:
    """``(rgb, depth)`` pairs found under ``root``, sorted; RGB frames without a depth file are left out."""
    pairs, missing = [], 0
    for rgb in sorted(root.rglob("rgb_*.jpg")):
        rel = rgb.relative_to(root)
        if rel.parent.parent.name != "rgb" or rel.parent.parent.parent.name != "frames":
            continue
        depth = depth_path_for(rel)
        if (root / depth).is_file():
            pairs.append((rel.as_posix(), depth.as_posix()))
        else:
            missing += 1
    if missing:
        logger.warning("vKITTI scan of %s: %d RGB frames have no depth file and are left out", root, missing)
    if not pairs:
        raise ValueError(f"`root` {str(root)!r} holds no Virtual KITTI 2 frames "
                         "(expected .../frames/rgb/Camera_N/rgb_NNNNN.jpg with matching depth PNGs)")
    return pairs


class VKittiDataset(PairedFilesDataset):
    """Virtual KITTI 2 RGB + depth, KB-cropped, normalised per image to [-1,1]."""

    def __init__(self, root, split=None, size: tuple[int, int] | None = DEFAULT_SIZE, hflip: bool = True,
                 min_depth: float = 1e-5, max_depth: float = 80.0):
        self.root = check_dir(root, "root")
        self.size = check_size(DEFAULT_SIZE if size is None else size)
        self.hflip = bool(hflip)
        self.min_depth = check_range("min_depth", min_depth)
        self.max_depth = check_range("max_depth", max_depth, low=self.min_depth)
        if split is None:
            self.pairs = scan_vkitti(self.root)
        else:
            self.pairs = read_pair_split(check_file(split, "split"), self.root)

    def load(self, index: int, aug_seed: int) -> dict:
        rgb_rel, depth_rel = self.pairs[index]
        flip = draw_flip(aug_rng(aug_seed)) and self.hflip
        rgb = read_rgb(self.root / rgb_rel)  # [3,H,W]
        depth = read_png_units(self.root / depth_rel) * CM_TO_M  # [1,H,W] metres
        if rgb.shape[-2:] != depth.shape[-2:]:
            raise SampleError(f"image size {tuple(rgb.shape[-2:])} != depth size {tuple(depth.shape[-2:])}")
        top, left = kb_crop_box(*rgb.shape[-2:])
        window = (slice(None), slice(top, top + KB_CROP[0]), slice(left, left + KB_CROP[1]))
        rgb, depth = rgb[window], depth[window]  # [3,352,1216], [1,352,1216]
        valid = depth_range_mask(depth, self.min_depth, self.max_depth)
        return depth_sample(rgb, depth, valid, self.size, flip, rgb_rel)
