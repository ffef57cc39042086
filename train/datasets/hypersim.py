"""Hypersim in Marigold's preprocessed layout (what ``train/prepare_hypersim.py`` writes).

Layout under ``root`` (one split folder, e.g. ``processed/train``)::

    <scene>/rgb_<cam>_frNNNN.png          tone-mapped RGB, 8-bit
    <scene>/depth_plane_<cam>_frNNNN.png  planar depth, uint16 millimetres, 0 = invalid

driven by a Marigold split file (``filename_list_train_filtered.txt``: ``rgb_rel depth_rel`` per line).
Valid depth: 1e-5 < d < 65 m. Samples are 768x1024 natively, resized to the training size (default 480x640).
"""

from __future__ import annotations

from .common import (PairedFilesDataset, aug_rng, check_dir, check_file, check_range, check_size, depth_range_mask,
                     depth_sample, draw_flip)
from .raster_io import read_pair_split, read_png_units, read_rgb

DEFAULT_SIZE = (480, 640)
MM_TO_M = 1e-3


class HypersimDataset(PairedFilesDataset):
    """Hypersim RGB + planar depth, normalised per image to [-1,1] (see ``common.depth_sample``)."""

    def __init__(self, root, split, size: tuple[int, int] | None = DEFAULT_SIZE, hflip: bool = True,
                 min_depth: float = 1e-5, max_depth: float = 65.0):
        self.root = check_dir(root, "root")
        self.split = check_file(split, "split")
        self.size = check_size(DEFAULT_SIZE if size is None else size)
        self.hflip = bool(hflip)
        self.min_depth = check_range("min_depth", min_depth)
        self.max_depth = check_range("max_depth", max_depth, low=self.min_depth)
        self.pairs = read_pair_split(self.split, self.root)

    def load(self, index: int, aug_seed: int) -> dict:
        rgb_rel, depth_rel = self.pairs[index]
        flip = draw_flip(aug_rng(aug_seed)) and self.hflip
        rgb = read_rgb(self.root / rgb_rel)  # [3,H,W] in [0,1]
        depth = read_png_units(self.root / depth_rel) * MM_TO_M  # [1,H,W] metres
        valid = depth_range_mask(depth, self.min_depth, self.max_depth)  # [1,H,W]
        return depth_sample(rgb, depth, valid, self.size, flip, rgb_rel)
