"""The one image reader: every path that reads pictures (the CLI, training, evaluation, the benchmarks) calls it.

It takes a file path or the encoded bytes of a file (a WebDataset member, a tarball entry). The header is read first
(:mod:`fiffdepth_core.fileio.headers`: the same read the CLI's pre-scan does), so an image above the pixel limit is
refused before any pixel is decoded. PNG and TIFF go through OpenCV when it is installed (Pillow reads 16-bit colour
as 8-bit); other formats, and everything when OpenCV is absent or fails, through Pillow. The EXIF orientation is
applied unless ``orient=False`` (evaluation reads pixels as stored, so images and ground-truth rasters agree), the
same way whichever decoder read the file. 16-bit and float samples are kept, except in a TIFF that declares an
orientation: OpenCV's handling of those differs between its file and memory readers, so Pillow reads them.

* :func:`decode_image` gives the pixels as stored: ``[H,W]`` or ``[H,W,C]`` (C = 2 grey+alpha, 3 RGB, 4 RGBA, in
  that order), uint8, uint16 or float32;
* :func:`load_image` gives float32 ``[C,H,W]`` in [0,1] (integers divided by their type's maximum), or RGB
  ``[3,H,W]`` with ``rgb=True`` (grey replicated, alpha dropped).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import InputNotFoundError
from .headers import ImageInputError, check_image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
ORIENTATION_TAG = 0x0112  # EXIF Orientation: 1 upright .. 8, as TIFF and EXIF define them
PNG_MAGIC, TIFF_MAGIC = b"\x89PNG\r\n\x1a\n", (b"II*\x00", b"MM\x00*")  # TIFF: little-, big-endian


def load_image(source: str | Path | bytes, max_pixels: int | None = None, *, rgb: bool = False, orient: bool = True,
               what: str | None = None, option: str = "--max-pixels") -> torch.Tensor:
    """An image file (path or encoded bytes) as float32 ``[C,H,W]`` in [0,1], C in 1..4 (``rgb``: ``[3,H,W]``).

    Arguments as :func:`decode_image`. Raises :class:`~fiffdepth_core.fileio.headers.ImageInputError` (a
    ``ValueError``) naming the file when it cannot be used, ``FileNotFoundError`` when a path does not exist.
    """
    array = decode_image(source, max_pixels, orient=orient, what=what, option=option)
    if array.ndim == 2:
        array = array[:, :, None]  # [H,W,1]
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32) / float(np.iinfo(array.dtype).max)
    else:
        array = np.clip(np.nan_to_num(array.astype(np.float32)), 0.0, 1.0)
    if rgb:
        array = np.repeat(array[:, :, :1], 3, axis=2) if array.shape[2] < 3 else array[:, :, :3]  # [H,W,3]
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)  # [C,H,W]


def decode_image(source: str | Path | bytes, max_pixels: int | None = None, *, orient: bool = True,
                 what: str | None = None, option: str = "--max-pixels") -> np.ndarray:
    """The pixels of an image file (path or encoded bytes) as stored: ``[H,W]`` or ``[H,W,C]`` (C = 2, 3, 4; RGB
    order), uint8, uint16 or float32.

    ``max_pixels``: the pixel limit (see :func:`~fiffdepth_core.fileio.headers.pixel_limit`); ``option`` names how
    the user raises it, in the message. ``orient``: apply the EXIF orientation. ``what``: how messages name the
    image (default: its path; for bytes, say which member it is).
    """
    if not isinstance(source, bytes):
        source = Path(source)
        if not source.is_file():
            raise InputNotFoundError(f"image not found: {source}")
    name = what or ("image bytes" if isinstance(source, bytes) else str(source))
    header = check_image(source, max_pixels, what=name, option=option)
    head = _head(source)
    png, tiff = head.startswith(PNG_MAGIC), head.startswith(TIFF_MAGIC)
    orientation = _orientation(source) if (png and orient) or tiff else 1
    array = _opencv(source) if png or (tiff and orientation == 1) else None
    if array is not None and array.shape[0] * array.shape[1] > max(header.pixels, 1):
        array = None  # OpenCV saw another image than the header describes: let Pillow decide
    if array is None:
        array = _pillow(source, name, orient)
    elif orientation != 1:  # a PNG OpenCV read as stored
        array = orient_array(array, orientation)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and not 2 <= array.shape[2] <= 4) or array.size == 0:
        raise ImageInputError(f"cannot read image {name}: it decodes to an unusable array of shape {array.shape}")
    return array


def orient_array(array: np.ndarray, orientation: int) -> np.ndarray:
    """``[H,W,...]`` pixels stored with EXIF ``orientation`` (1-8), turned upright as Pillow's ``exif_transpose``
    turns them."""
    if orientation in (5, 6, 7, 8):
        array = np.swapaxes(array, 0, 1)  # transpose: the image's rows become its columns
        orientation = {5: 1, 6: 2, 7: 3, 8: 4}[orientation]  # what remains after the transpose
    if orientation == 2:
        array = array[:, ::-1]
    elif orientation == 3:
        array = array[::-1, ::-1]
    elif orientation == 4:
        array = array[::-1]
    return np.ascontiguousarray(array)


def _head(source: Path | bytes) -> bytes:
    if isinstance(source, bytes):
        return source[:8]
    try:
        with open(source, "rb") as handle:
            return handle.read(8)
    except OSError:
        return b""


def _opencv(source: Path | bytes) -> np.ndarray | None:
    """OpenCV's decode, RGB(A) order, or None (no OpenCV, or it cannot decode this file)."""
    try:
        import cv2
    except ImportError:
        return None
    logging_ = getattr(getattr(cv2, "utils", None), "logging", None)
    previous = logging_.getLogLevel() if logging_ is not None else None
    try:  # OpenCV logs its own decode errors to stderr; the error that matters is raised by the caller
        if logging_ is not None:
            logging_.setLogLevel(logging_.LOG_LEVEL_SILENT)
        if isinstance(source, bytes):  # IMREAD_UNCHANGED: as stored, no orientation applied
            array = cv2.imdecode(np.frombuffer(source, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        else:
            array = cv2.imread(str(source), cv2.IMREAD_UNCHANGED)
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


def _open(source: Path | bytes):
    from PIL import Image

    return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)


def _orientation(source: Path | bytes) -> int:
    """The EXIF orientation the file declares (1 when none, or when its metadata cannot be read)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # damaged metadata: Pillow warns, the pixels decide
            with _open(source) as image:
                value = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # damaged metadata: the pixels as stored
        return 1
    return value if value in range(1, 9) else 1


def _pillow(source: Path | bytes, name: str, orient: bool) -> np.ndarray:
    from PIL import ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about damaged metadata it skips; the read decides
            with _open(source) as opened:
                image = ImageOps.exif_transpose(opened) if orient else opened
                if image.mode in ("I;16", "I;16B", "I;16L"):
                    return np.asarray(image).astype(np.uint16)
                if image.mode == "I":
                    return np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
                if image.mode == "F":
                    return np.asarray(image, dtype=np.float32)
                if image.mode not in ("L", "LA", "RGB", "RGBA"):
                    image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info
                                          else "RGB")
                return np.asarray(image)
    except Exception as err:  # Pillow raises OSError, SyntaxError, struct.error, ... for damaged files
        raise ImageInputError(f"cannot read image {name}: {err}") from None


def list_images(inputs: list[str | Path]) -> list[Path]:
    """Files named directly plus the images inside named folders (sorted, not recursive, hidden files left out)."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                            and not p.name.startswith("."))
        elif item.is_file():
            found.append(item)
        else:
            raise InputNotFoundError(f"input not found: {item}")
    return found
