"""File readers for the training datasets: RGB images, depth rasters (16-bit PNG, .npy, EXR), split files.

Images are decoded by the project's one image reader (:func:`fiffdepth_core.fileio.load_image` /
:func:`~fiffdepth_core.fileio.decode_image`: header and pixel limit first, EXIF orientation, 16-bit kept); the
functions here only say how training wants them (RGB, or a depth PNG in its stored units) and turn a file that
cannot be used into ``SampleError`` (or ``OSError``), which the dataset turns into a logged skip.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from fiffdepth_core.fileio import ImageInputError, decode_image, load_image, read_exr

from .common import SampleError

logger = logging.getLogger(__name__)

DEPTH_SUFFIXES = (".png", ".npy", ".exr")
LIMIT_SETTING = "FIFFDEPTH_MAX_PIXELS"  # how a training run raises the pixel limit (it has no --max-pixels)


def read_rgb(source: str | Path | bytes, what: str | None = None) -> torch.Tensor:
    """An image file, or its encoded bytes (a WebDataset member, named by ``what``), as float32 RGB ``[3,H,W]`` in
    [0,1] (grey replicated, alpha dropped, EXIF orientation applied)."""
    try:
        return load_image(source, rgb=True, what=what, option=LIMIT_SETTING)
    except ImageInputError as err:
        raise SampleError(str(err)) from None


def read_png_units(path: str | Path) -> torch.Tensor:
    """A single-channel 8- or 16-bit PNG as float32 ``[1,H,W]`` in its stored integer units (not scaled to 1), as
    stored (no EXIF orientation), so millimetres / centimetres stay exact."""
    path = Path(path)
    if not path.is_file():
        raise SampleError(f"depth file not found: {path}")
    try:
        array = decode_image(path, orient=False, option=LIMIT_SETTING)
    except ImageInputError as err:
        raise SampleError(str(err)) from None
    if array.ndim != 2:
        raise SampleError(f"depth PNG must have one channel, got shape {array.shape}: {path}")
    if not np.issubdtype(array.dtype, np.integer):
        raise SampleError(f"depth PNG must hold integers, got {array.dtype}: {path}")
    return torch.from_numpy(array.astype(np.float32))[None]  # [1,H,W]


def read_depth(path: str | Path, png_scale: float) -> torch.Tensor:
    """A depth raster as float32 ``[1,H,W]`` metres: PNG units x ``png_scale``; ``.npy`` and EXR as stored."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".png":
        return read_png_units(path) * png_scale
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise SampleError(f"cannot read depth {path}: {err}") from err
    elif suffix == ".exr":
        try:
            array = read_exr(path)
        except Exception as err:  # OpenEXR raises plain Exception/RuntimeError for damaged files
            raise SampleError(f"cannot read depth {path}: {err}") from err
    else:
        raise SampleError(f"unsupported depth file type {suffix!r} (allowed: {DEPTH_SUFFIXES}): {path}")
    array = np.squeeze(np.asarray(array, dtype=np.float32))
    if array.ndim != 2:
        raise SampleError(f"depth must be a 2-D map, got shape {array.shape}: {path}")
    return torch.from_numpy(np.ascontiguousarray(array))[None]  # [1,H,W]


def read_pair_split(split_file: Path, root: Path) -> list[tuple[str, str]]:
    """``(rgb, depth)`` relative paths from a Marigold split file.

    Marigold's format: one sample per line, whitespace-separated columns ``rgb_rel depth_rel [extra...]``
    relative to the dataset root (extra columns such as KITTI's focal length are ignored). Blank lines and
    ``#`` comments are skipped; lines whose depth is ``None`` (no ground truth) are dropped.
    """
    pairs: list[tuple[str, str]] = []
    dropped = 0
    for number, line in enumerate(split_file.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        columns = line.split()
        if len(columns) < 2:
            raise ValueError(f"split file {split_file} line {number}: expected `rgb_path depth_path`, got {line!r}")
        if columns[1] == "None":
            dropped += 1
            continue
        pairs.append((columns[0], columns[1]))
    if dropped:
        logger.info("%s: dropped %d lines without depth", split_file, dropped)
    if not pairs:
        raise ValueError(f"split file {split_file} lists no samples")
    rgb_first, depth_first = (root / pairs[0][0], root / pairs[0][1])
    if not rgb_first.is_file() or not depth_first.is_file():
        raise ValueError(f"the first entry of split file {split_file} is not under root {root} "
                         f"({rgb_first} or {depth_first} is missing): is `root` the folder the split is relative to?")
    return pairs
