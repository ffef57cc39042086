"""Image headers before pixels: the size of every input is read (cheaply) before anything is decoded.

A 30000 x 30000 PNG can be under 1 MB on disk and need gigabytes once decoded. Every reader in the project
(the CLI, training and evaluation) asks :func:`check_image` first and refuses images above a pixel limit:
``max_pixels`` when given, else the ``FIFFDEPTH_MAX_PIXELS`` environment variable, else :data:`MAX_PIXELS`
(Pillow's own ``Image.MAX_IMAGE_PIXELS``, about 89.5 megapixels; 0 = no limit).
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import UserInputError

MAX_PIXELS = 89_478_485  # = PIL.Image.MAX_IMAGE_PIXELS (1024 * 1024 * 1024 // 4 // 3)
ENV_MAX_PIXELS = "FIFFDEPTH_MAX_PIXELS"


class ImageInputError(UserInputError):
    """An input image cannot be used: unreadable header, or more pixels than the limit."""

    what = "input"


@dataclass(frozen=True)
class ImageHeader:
    width: int
    height: int
    channels: int  # as stored (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA); the decode may expand to RGB(A)
    bytes_per_sample: int  # 1 (8-bit), 2 (16-bit), 4 (32-bit int/float)

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def decode_bytes(self) -> int:
        """Peak memory of decoding this image to the float32 ``[C,H,W]`` tensor the readers return: the decoded
        array, its float32 copy and the RGB conversion."""
        decoded = self.pixels * max(self.channels, 3) * self.bytes_per_sample
        return decoded + 2 * self.pixels * max(self.channels, 3) * 4


def pixel_limit(max_pixels: int | None = None) -> int:
    """The limit in force: the argument, else ``FIFFDEPTH_MAX_PIXELS``, else :data:`MAX_PIXELS` (0 = none)."""
    if max_pixels is not None:
        return int(max_pixels)
    raw = os.environ.get(ENV_MAX_PIXELS, "").strip()
    if not raw:
        return MAX_PIXELS
    try:
        value = int(float(raw))
    except ValueError:
        value = -1
    if value < 0:
        raise ImageInputError(f"{ENV_MAX_PIXELS}={raw}", "a whole number of pixels >= 0, 0 = no limit",
                              what="environment variable")
    return value


def pixel_count(pixels: int, other: int | None = None) -> str:
    """``pixels`` in words: megapixels to one decimal from a million on, else the exact count; exact as well when
    it would read the same as ``other`` (an image just above a limit)."""
    def words(count: int) -> str:
        return f"{count / 1e6:.1f} megapixels" if count >= 1_000_000 else f"{count} pixels"

    if other is not None and words(pixels) == words(other) and pixels != other:
        return f"{pixels} pixels"
    return words(pixels)


_PIL_BITS = {"1": 1, "L": 1, "P": 1, "LA": 1, "RGB": 1, "RGBA": 1, "CMYK": 1, "YCbCr": 1, "I;16": 2, "I;16B": 2,
             "I;16L": 2, "I": 4, "F": 4}


def _pil_header(data: bytes | Path) -> ImageHeader | None:
    from PIL import Image

    source = io.BytesIO(data) if isinstance(data, bytes) else data
    import warnings

    try:
        with warnings.catch_warnings(), Image.open(source) as image:  # lazy: reads the header only
            warnings.simplefilter("ignore")  # damaged metadata Pillow skips; the size is what matters here
            width, height = image.size
            bands = len(image.getbands())
            return ImageHeader(width, height, bands, _PIL_BITS.get(image.mode, 4))
    except Exception:  # Pillow raises many types for files it does not recognise
        return None


def _tiff_header(handle) -> ImageHeader | None:
    """Width and height from a TIFF's first directory (for TIFFs Pillow cannot open but OpenCV can decode)."""
    start = handle.read(8)
    if start[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    order = "<" if start[:2] == b"II" else ">"
    try:
        (offset,) = struct.unpack_from(order + "I", start, 4)
        handle.seek(offset)
        (count,) = struct.unpack(order + "H", handle.read(2))
        table = handle.read(12 * min(count, 4096))
        found = {}
        for i in range(len(table) // 12):
            tag, kind, _, value = struct.unpack_from(order + "HHI4s", table, 12 * i)
            if tag in (256, 257, 258, 277):  # width, height, bits per sample, samples per pixel
                fmt = order + ("H" if kind == 3 else "I")
                found[tag] = struct.unpack_from(fmt, value)[0]
    except (struct.error, OSError, ValueError):
        return None
    if 256 in found and 257 in found:
        return ImageHeader(found[256], found[257], found.get(277, 1), max(1, -(-found.get(258, 8) // 8)))
    return None


def read_header(source: str | Path | bytes, what: str | None = None) -> ImageHeader:
    """The size, channels and sample size of an image file (path or encoded bytes), without decoding it."""
    from PIL import Image

    what = what or str(source)
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # only the header is read; the limit is applied by check_image
    try:
        if isinstance(source, bytes):
            header, empty = _pil_header(source), not source
            header = header or _tiff_header(io.BytesIO(source))
        else:
            path = Path(source)
            if not path.is_file():
                raise ImageInputError(f"cannot read image {what}: " + ("not found" if not path.exists() else
                                                                          "not a regular file"))
            header, empty = _pil_header(path), False
            if header is None:  # Pillow does not know it: look at the bytes ourselves
                try:
                    empty = path.stat().st_size == 0
                    with open(path, "rb") as handle:
                        header = _tiff_header(handle)
                except OSError as err:
                    raise ImageInputError(f"cannot read image {what}: {err.strerror or err}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    if header is None:
        if empty:
            raise ImageInputError(f"cannot read image {what}: the file is empty")
        raise ImageInputError(f"cannot read image {what}: its header is not one of a known image format, or is "
                              "damaged", "PNG, JPEG, WebP, BMP or TIFF")
    if header.width <= 0 or header.height <= 0:
        raise ImageInputError(f"cannot read image {what}: its header gives an empty size "
                              f"({header.width}x{header.height})")
    return header


def check_image(source: str | Path | bytes, max_pixels: int | None = None, what: str | None = None,
                option: str = "--max-pixels") -> ImageHeader:
    """:func:`read_header`, refusing images above the pixel limit with a message naming size, limit and option."""
    header = read_header(source, what)
    limit = pixel_limit(max_pixels)
    if limit and header.pixels > limit:
        raise ImageInputError(
            f"image {what or source} is {header.width}x{header.height} = {pixel_count(header.pixels, limit)}, above "
            f"the limit of {pixel_count(limit, header.pixels)}", "raise it with "
            + (f"{option} N or " if option != ENV_MAX_PIXELS else "") + f"the {ENV_MAX_PIXELS} environment "
            "variable, 0 = no limit")
    return header


def prescan(paths: list[Path], max_pixels: int | None = None,
            option: str = "--max-pixels") -> tuple[dict[Path, ImageHeader], list[tuple[Path, str]]]:
    """Every file's header, before any model loads: (headers of the usable ones, (path, reason) of the rest)."""
    headers, failures = {}, []
    for path in paths:
        try:
            headers[path] = check_image(path, max_pixels, option=option)
        except ImageInputError as err:
            failures.append((path, str(err)))
    return headers, failures
