"""Writing depth files: 16-bit PNG, float32 .npy, float32 EXR, 8-bit previews, always atomically.

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

from .processes import tag


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
    mode of the temporary file. The temporary file is hidden and named after its writer
    (``.<name>.fd-<pid>@<host>.<random><suffix>``), so that a run killed while writing it has its leftover removed
    by the next run into the folder (:func:`fiffdepth_core.fileio.processes.sweep`).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{tag()}.", suffix=path.suffix, dir=path.parent)
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
