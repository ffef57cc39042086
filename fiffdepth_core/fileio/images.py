"""Reading image files: one decoder for every path that reads pictures (CLI, training, evaluation, hosts).

Files are decoded to float32 ``[C,H,W]`` in [0,1] keeping 16-bit and float precision; the header is checked
first (:mod:`fiffdepth_core.fileio.headers`) so an oversized image is refused before any pixel is decoded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import InputNotFoundError
from .headers import check_image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def load_image(path: str | Path, max_pixels: int | None = None) -> torch.Tensor:
    """An image file as float32 ``[C,H,W]`` in [0,1], C in 1..4, keeping 16-bit and float precision.

    The header is read first and images above the pixel limit are refused before any decoding (``max_pixels``;
    see :mod:`fiffdepth_core.fileio.headers`). PNG and TIFF go through OpenCV when it is installed (Pillow reads 16-bit
    colour as 8-bit); other files, and everything when OpenCV is absent, through Pillow with the EXIF
    orientation applied. Any file that cannot be decoded raises ``ValueError`` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"image not found: {path}")
    header = check_image(path, max_pixels)
    array = _load_cv2(path) if path.suffix.lower() in (".png", ".tif", ".tiff") else None
    if array is not None and array.shape[0] * array.shape[1] > max(header.pixels, 1):
        array = None  # OpenCV saw another image than the header describes: let Pillow decide
    if array is None:
        array = _load_pil(path)
    if array.ndim == 2:
        array = array[:, :, None]  # [H,W,1]
    if array.ndim != 3 or not 1 <= array.shape[2] <= 4 or array.size == 0:
        raise ValueError(f"cannot read image {path}: decoded to an unusable array of shape {array.shape}")
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32) / float(np.iinfo(array.dtype).max)
    else:
        array = np.clip(np.nan_to_num(array.astype(np.float32)), 0.0, 1.0)
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)  # [C,H,W]


def _load_cv2(path: Path) -> np.ndarray | None:
    try:
        import cv2
    except ImportError:
        return None
    logging_ = getattr(getattr(cv2, "utils", None), "logging", None)
    previous = logging_.getLogLevel() if logging_ is not None else None
    try:  # OpenCV logs its own decode errors to stderr; the error that matters is raised by the caller
        if logging_ is not None:
            logging_.setLogLevel(logging_.LOG_LEVEL_SILENT)
        array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
    finally:
        if logging_ is not None:
            logging_.setLogLevel(previous)
    if array is None or array.dtype == np.int8 or array.ndim not in (2, 3):
        return None
    if array.ndim == 3 and array.shape[2] == 3:
        array = array[:, :, ::-1]  # BGR -> RGB
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, [2, 1, 0, 3]]  # BGRA -> RGBA
    return array


def _load_pil(path: Path) -> np.ndarray:
    import warnings

    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings(), Image.open(path) as image:
            warnings.simplefilter("ignore")  # Pillow warns about damaged metadata it skips; the read decides
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I;16", "I;16B", "I;16L"):
                return np.asarray(image).astype(np.uint16)
            if image.mode == "I":
                return np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
            if image.mode == "F":
                return np.asarray(image, dtype=np.float32)
            if image.mode not in ("L", "LA", "RGB", "RGBA"):
                image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
            return np.asarray(image)
    except Exception as err:  # Pillow raises OSError, SyntaxError, struct.error, ... for damaged files
        raise ValueError(f"cannot read image {path}: {err}") from None


def list_images(inputs: list[str | Path]) -> list[Path]:
    """Files named directly plus the images inside named folders (sorted, not recursive)."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        elif item.is_file():
            found.append(item)
        else:
            raise InputNotFoundError(f"input not found: {item}")
    return found
