"""What every training dataset shares: keys, input checks, skipping of bad samples, and the final geometry.

Sample contract (the trainer relies on it): ``dataset[(index, aug_seed)]`` returns a dict with

- ``rgb``: float32 ``[3,H,W]`` in [-1,1]
- ``depth``: float32 ``[1,H,W]`` in [-1,1] (near = -1, far = +1; 0 where invalid)
- ``valid``: bool ``[1,H,W]`` (may be all False for a degenerate image)
- ``name``: str, the sample's relative file id
- ``skipped``: int, how many bad samples were passed over to produce this one

``H,W`` is the dataset's fixed training size. ``aug_seed`` alone drives the augmentation (flip, crop), so a key
always gives the same sample.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fiffdepth_core.method import normalize_depth, resize

logger = logging.getLogger(__name__)

MAX_TRIES = 16  # consecutive bad samples tolerated before a read is treated as a real failure
_WARNED: set[str] = set()  # per process: each bad file is reported once


class SampleError(ValueError):
    """A sample that cannot be used (corrupt file, size mismatch, missing label): skip it, do not crash."""


# Errors a reader may raise for one bad file; anything else is a bug and propagates.
SKIPPABLE = (SampleError, OSError, ValueError, EOFError)


def check_size(size, name: str = "size") -> tuple[int, int]:
    """A training size ``(H, W)``: two positive multiples of 8 (the VAE's downsampling factor)."""
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be (height, width), got {size!r}") from None
    if height <= 0 or width <= 0 or height % 8 or width % 8:
        raise ValueError(f"`{name}` must be two positive multiples of 8, got {(height, width)}")
    return height, width


def check_dir(path, name: str) -> Path:
    """An existing folder, or a ValueError naming the parameter and the path."""
    if path is None or str(path) == "":
        raise ValueError(f"`{name}` is required (a folder), got {path!r}")
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ValueError(f"`{name}` must be an existing folder, got {str(path)!r} (not found)")
    return path


def check_file(path, name: str) -> Path:
    """An existing file, or a ValueError naming the parameter and the path."""
    if path is None or str(path) == "":
        raise ValueError(f"`{name}` is required (a file), got {path!r}")
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"`{name}` must be an existing file, got {str(path)!r} (not found)")
    return path


def check_range(name: str, value: float, low: float = 0.0, high: float = math.inf) -> float:
    """A finite float in ``[low, high]``."""
    value = float(value)
    if not low <= value <= high or math.isnan(value):
        raise ValueError(f"`{name}` must be in [{low}, {high}], got {value}")
    return value


def parse_key(key, length: int) -> tuple[int, int]:
    """``(index, aug_seed)`` from a key; a bare int means aug_seed 0."""
    if isinstance(key, (tuple, list)) and len(key) == 2:
        index, aug_seed = int(key[0]), int(key[1])
    elif isinstance(key, (int, np.integer)):
        index, aug_seed = int(key), 0
    else:
        raise TypeError(f"dataset key must be (index, aug_seed) or an int, got {key!r}")
    if not 0 <= index < length:
        raise IndexError(f"index must be in [0, {length - 1}], got {index}")
    return index, aug_seed


def aug_rng(aug_seed: int) -> np.random.Generator:
    """The augmentation random stream of one sample. Draw order is fixed: flip first, then crop."""
    return np.random.default_rng(int(aug_seed) & 0xFFFFFFFFFFFFFFFF)


def draw_flip(rng: np.random.Generator) -> bool:
    """Horizontal flip with p = 0.5 (always drawn, so later draws do not depend on the hflip setting)."""
    return bool(rng.random() < 0.5)


def warn_once(what: str, err: BaseException) -> None:
    """Log a bad file once per process."""
    if what in _WARNED:
        return
    _WARNED.add(what)
    logger.warning("skipping bad training sample %s: %s", what, err)


class KeyedDataset(torch.utils.data.Dataset):
    """Base of all training readers: key parsing and deterministic skipping of bad samples.

    Subclasses set ``self.size`` and ``self.hflip`` and implement ``__len__``, ``describe(index)`` and
    ``load(index, aug_seed)``; ``load`` raises one of ``SKIPPABLE`` for a bad sample, which is then replaced by
    the next index (wrapping), at most ``MAX_TRIES`` times.
    """

    size: tuple[int, int]
    hflip: bool

    def describe(self, index: int) -> str:
        return f"{type(self).__name__}[{index}]"

    def load(self, index: int, aug_seed: int) -> dict:
        raise NotImplementedError

    def __getitem__(self, key) -> dict:
        length = len(self)
        index, aug_seed = parse_key(key, length)
        last: BaseException | None = None
        for attempt in range(min(MAX_TRIES, length)):
            current = (index + attempt) % length
            try:
                sample = self.load(current, aug_seed)
            except SKIPPABLE as err:
                warn_once(self.describe(current), err)
                last = err
                continue
            sample["skipped"] = attempt
            return sample
        raise RuntimeError(
            f"{type(self).__name__}: {min(MAX_TRIES, length)} consecutive samples starting at index {index} "
            f"({self.describe(index)}) could not be read; last error: {last}. Check the dataset files.")


def resize_nearest(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-exact resize of a ``[C,H,W]`` float or bool map (depth, masks): values are never mixed."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    work = image[None].float()  # [1,C,H,W]
    out = F.interpolate(work, size=size, mode="nearest-exact")[0]  # [C,h,w]
    return out > 0.5 if image.dtype == torch.bool else out.to(image.dtype)


def resize_rgb(rgb: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize of a ``[C,H,W]`` image."""
    return resize(rgb[None], size)[0]  # [C,h,w]


def to_signed(rgb01: torch.Tensor) -> torch.Tensor:
    """[0,1] -> [-1,1], float32, clipped."""
    return (rgb01.float() * 2.0 - 1.0).clamp(-1.0, 1.0)


def flip_sample(sample: dict) -> dict:
    """Mirror every ``[C,H,W]`` raster of a sample left-right."""
    for name in ("rgb", "depth", "valid"):
        sample[name] = torch.flip(sample[name], dims=[-1])
    return sample


class PairedFilesDataset(KeyedDataset):
    """A reader whose samples are ``self.pairs`` of (RGB, depth) paths relative to ``self.root``."""

    root: Path
    pairs: list[tuple[str, str]]

    def __len__(self) -> int:
        return len(self.pairs)

    def describe(self, index: int) -> str:
        rgb, depth = self.pairs[index]
        return f"{self.root / rgb} / {depth}"


def depth_sample(rgb01: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, size: tuple[int, int],
                 flip: bool, name: str) -> dict:
    """A synthetic-branch sample from native-resolution rasters.

    ``rgb01`` ``[3,H,W]`` in [0,1]; ``depth`` ``[1,H,W]`` in metres; ``valid`` ``[1,H,W]`` bool. The depth is
    normalised at native resolution (2/98 percentiles of valid pixels), then everything is resized to ``size``
    (RGB bilinear antialiased, depth and mask nearest), then flipped. The flip commutes with the percentile
    normalisation; doing it last makes a flipped sample the exact mirror of the unflipped one.
    """
    if rgb01.shape[-2:] != depth.shape[-2:]:
        raise SampleError(f"image size {tuple(rgb01.shape[-2:])} != depth size {tuple(depth.shape[-2:])}")
    normalised, valid = normalize_depth(depth, valid)  # [1,H,W], [1,H,W]
    sample = {
        "rgb": to_signed(resize_rgb(rgb01, size)).contiguous(),  # [3,h,w]
        "depth": resize_nearest(normalised, size).float().contiguous(),  # [1,h,w]
        "valid": resize_nearest(valid, size).contiguous(),  # [1,h,w]
        "name": name,
    }
    return flip_sample(sample) if flip else sample


def depth_range_mask(depth: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """Finite pixels with ``min_depth < d < max_depth``."""
    return torch.isfinite(depth) & (depth > min_depth) & (depth < max_depth)
