"""File readers for the training datasets: RGB images, depth rasters (16-bit PNG, .npy, EXR), split files.

Every reader returns tensors (``[C,H,W]``) and raises ``SampleError`` (or ``OSError``) for a file it cannot use,
which the dataset turns into a logged skip.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import torch

from fiffdepth_core.fileio import ImageInputError, check_image, load_image, read_exr
from fiffdepth_core.method import to_rgb

from .common import SampleError

logger = logging.getLogger(__name__)

DEPTH_SUFFIXES = (".png", ".npy", ".exr")


def _check_size(source, what: str) -> None:
    """Refuse, from the header, images above the pixel limit (``FIFFDEPTH_MAX_PIXELS``) before decoding them."""
    try:
        check_image(source, what=what, option="FIFFDEPTH_MAX_PIXELS")
    except ImageInputError as err:
        raise SampleError(str(err)) from None


def read_rgb(path: str | Path) -> torch.Tensor:
    """An image file as float32 RGB ``[3,H,W]`` in [0,1] (grey is replicated, alpha dropped)."""
    image = load_image(path)  # [C,H,W]
    return to_rgb(image[None])[0].contiguous()  # [3,H,W]


def decode_photo(data: bytes, what: str) -> torch.Tensor:
    """Encoded image bytes (a WebDataset member) as float32 RGB ``[3,H,W]`` in [0,1], EXIF orientation applied."""
    from PIL import Image, ImageOps

    _check_size(data, what)
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = ImageOps.exif_transpose(image).convert("RGB")
            array = np.asarray(image, dtype=np.uint8)  # [H,W,3]
    except (OSError, ValueError, SyntaxError) as err:
        raise SampleError(f"cannot decode image {what}: {err}") from err
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0  # [3,H,W]


def read_png_units(path: str | Path) -> torch.Tensor:
    """A single-channel 8- or 16-bit PNG as float32 ``[1,H,W]`` in its stored integer units (not scaled to 1).

    ``fiffdepth_core.fileio.images.load_image`` maps integers to [0,1] and hides the bit depth, so depth PNGs are read
    here with OpenCV (Pillow as fallback), keeping millimetres / centimetres exact.
    """
    path = Path(path)
    if not path.is_file():
        raise SampleError(f"depth file not found: {path}")
    _check_size(path, str(path))
    array = _png_cv2(path)
    if array is None:
        array = _png_pil(path)
    if array.ndim != 2:
        raise SampleError(f"depth PNG must have one channel, got shape {array.shape}: {path}")
    if not np.issubdtype(array.dtype, np.integer):
        raise SampleError(f"depth PNG must hold integers, got {array.dtype}: {path}")
    return torch.from_numpy(array.astype(np.float32))[None]  # [1,H,W]


def _png_cv2(path: Path) -> np.ndarray | None:
    try:
        import cv2
    except ImportError:
        return None
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def _png_pil(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image)
    except (OSError, ValueError, SyntaxError) as err:
        raise SampleError(f"cannot read depth PNG {path}: {err}") from err


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
