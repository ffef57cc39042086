"""Reading images and writing depth files: 16-bit PNG, float32 .npy, float32 EXR, colour previews.

Writers never overwrite an existing file unless ``overwrite=True``, and never leave a half-written file:
each one writes to a temporary name beside the target and moves it into place at the end.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
FORMATS = ("npy", "png16", "exr", "controlnet", "color")
FORMAT_SUFFIX = {"npy": ".npy", "png16": "_depth16.png", "exr": ".exr", "controlnet": "_controlnet.png",
                 "color": "_color.png"}


def load_image(path: str | Path, max_pixels: int | None = None) -> torch.Tensor:
    """An image file as float32 ``[C,H,W]`` in [0,1], C in 1..4, keeping 16-bit and float precision.

    The header is read first and images above the pixel limit are refused before any decoding (``max_pixels``;
    see :mod:`fiffdepth_core.inputs`). PNG and TIFF go through OpenCV when it is installed (Pillow reads 16-bit
    colour as 8-bit); other files, and everything when OpenCV is absent, through Pillow with the EXIF
    orientation applied. Any file that cannot be decoded raises ``ValueError`` naming it.
    """
    from .inputs import check_image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
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
            raise FileNotFoundError(f"input not found: {item}")
    return found


def output_path(output_dir: str | Path, stem: str, fmt: str) -> Path:
    """Where ``fmt`` output for the input called ``stem`` goes, e.g. ``<dir>/<stem>.npy``."""
    if fmt not in FORMATS:
        raise ValueError(f"`format` must be one of {FORMATS}, got {fmt!r}")
    return Path(output_dir) / f"{stem}{FORMAT_SUFFIX[fmt]}"


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux), else by the set-and-restore idiom."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, write: Callable[[Path], None], overwrite: bool) -> Path:
    """Run ``write(tmp)`` on a temporary file beside ``path``, then move it into place.

    The file ends up with the permissions a plain ``open()`` would give it (0666 less the umask), not the private
    mode of the temporary file.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        publish(tmp, path, overwrite)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def publish(tmp: Path, path: Path, overwrite: bool, taken: str | None = None) -> None:
    """Give the finished temporary file ``tmp`` its name ``path``, with the permissions a plain ``open()`` gives
    (0666 less the umask, not the temporary file's private mode).

    With ``overwrite`` it replaces what is there. Without, it never clobbers: a hard link fails where the name
    exists, so no file that appeared meanwhile is replaced; check + replace only on file systems without hard
    links. ``taken`` is the message of the FileExistsError then. The caller removes ``tmp`` afterwards.
    """
    os.chmod(tmp, 0o666 & ~current_umask())
    if overwrite:
        os.replace(tmp, path)
        return
    taken = taken or f"{path} already exists; pass overwrite=True to replace it"
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(taken) from None
    except OSError:  # file systems without hard links
        if path.exists():
            raise FileExistsError(taken) from None
        os.replace(tmp, path)


def _as_2d(depth) -> np.ndarray:
    array = depth.detach().float().cpu().numpy() if isinstance(depth, torch.Tensor) else np.asarray(depth)
    if array.ndim != 2:
        raise ValueError(f"`depth` must have shape [H,W], got {array.shape}")
    return array.astype(np.float32)


def write_png16(path: str | Path, depth, overwrite: bool = False) -> Path:
    """Depth in [0,1] ``[H,W]`` as a 16-bit greyscale PNG (value x 65535, rounded)."""
    from PIL import Image

    values = np.round(np.clip(_as_2d(depth), 0.0, 1.0) * 65535.0).astype(np.uint16)
    return write_atomic(path, lambda tmp: Image.fromarray(values).save(tmp, format="PNG"), overwrite)


def write_png8(path: str | Path, image, overwrite: bool = False) -> Path:
    """An ``[H,W]`` or ``[3,H,W]`` image in [0,1] as an 8-bit PNG (previews and ControlNet maps)."""
    from PIL import Image

    array = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3:
        array = np.moveaxis(array, 0, -1)  # [H,W,3]
    values = np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    return write_atomic(path, lambda tmp: Image.fromarray(values).save(tmp, format="PNG"), overwrite)


def write_npy(path: str | Path, depth, overwrite: bool = False) -> Path:
    """Depth ``[H,W]`` as float32 ``.npy``, exactly."""
    values = _as_2d(depth)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, values)

    return write_atomic(path, write, overwrite)


def write_exr(path: str | Path, depth, overwrite: bool = False) -> Path:
    """Depth ``[H,W]`` as a float32 OpenEXR file with one channel ``Z`` (ZIP compression, lossless)."""
    try:
        import OpenEXR
    except ImportError as err:
        raise ImportError("EXR output needs the `openexr` package: pip install openexr") from err
    values = np.ascontiguousarray(_as_2d(depth))
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}

    def write(tmp: Path) -> None:
        with OpenEXR.File(header, {"Z": values}) as exr:
            exr.write(str(tmp))

    return write_atomic(path, write, overwrite)


def read_exr(path: str | Path) -> np.ndarray:
    """The first channel of an EXR file as float32 ``[H,W]`` (``Z`` if present)."""
    import OpenEXR

    with OpenEXR.File(str(path)) as exr:
        channels = exr.channels()
        name = "Z" if "Z" in channels else next(iter(channels))
        return np.asarray(channels[name].pixels, dtype=np.float32)


WRITERS = {"npy": write_npy, "png16": write_png16, "exr": write_exr}


def json_safe(value):
    """A copy of nested dicts/lists/floats that strict JSON accepts: NaN -> None, +-inf -> "inf" / "-inf"."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None if np.isnan(value) else ("inf" if value > 0 else "-inf")
    return value
