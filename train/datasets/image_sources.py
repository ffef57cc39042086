"""Real photos for the t = -1 branch: an index over a folder of images or WebDataset shards, plus the label cache.

Two sources, one image id per photo:

- a folder of images (searched recursively): id = path relative to the folder, without extension
  (``city/0001.jpg`` -> ``city/0001``);
- WebDataset shards in img2dataset's layout (``00000.tar``, ``00001.tar``... holding ``<key>.jpg``,
  ``<key>.txt``, ``<key>.json``; the ``.parquet`` and ``_stats.json`` files beside them are ignored):
  id = ``<shard stem>/<key>`` (``00000/000000042``). Images are read straight from the tar by byte offset, so
  shards need no unpacking and random access stays cheap.

Pseudo labels (``train/pseudo_labels.py``) live at ``<labels>/<id>.npy``: float16 ``[H,W]`` teacher disparity at
the image's native size (after EXIF orientation).
"""

from __future__ import annotations

import glob
import logging
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fiffdepth_core.fileio import IMAGE_EXTENSIONS, write_atomic

from .common import SampleError
from .raster_io import read_rgb

logger = logging.getLogger(__name__)

SHARD_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
LABEL_SUFFIX = ".npy"
FLOAT16_MAX = 65504.0


@dataclass(frozen=True)
class ImageRef:
    """Where one photo lives: a file (``offset`` -1) or a byte range inside a tar shard."""

    id: str
    path: str
    offset: int = -1
    size: int = -1


def _shard_paths(source: Path) -> list[Path]:
    if source.is_file() and source.suffix == ".tar":
        return [source]
    if source.is_dir():
        return sorted(p for p in source.iterdir() if p.is_file() and p.suffix == ".tar")
    return sorted(Path(p) for p in glob.glob(str(source)) if p.endswith(".tar"))


def index_shard(shard: Path) -> list[ImageRef]:
    """One ``ImageRef`` per image member of a WebDataset tar (key = member path up to the first dot of its name)."""
    refs = []
    try:
        with tarfile.open(shard, "r:") as tar:
            for member in tar:
                suffix = Path(member.name).suffix.lower()
                if not member.isfile() or suffix not in SHARD_IMAGE_EXTENSIONS:
                    continue
                folder, name = os.path.split(member.name)
                key = os.path.join(folder, name.split(".", 1)[0])
                refs.append(ImageRef(f"{shard.stem}/{key}", str(shard), member.offset_data, member.size))
    except (tarfile.TarError, OSError) as err:
        logger.warning("skipping unreadable shard %s (%s); %d images read before the error", shard, err, len(refs))
    return refs


def index_folder(folder: Path) -> list[ImageRef]:
    """One ``ImageRef`` per image file under ``folder`` (recursive, sorted)."""
    refs, seen = [], {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        image_id = path.relative_to(folder).with_suffix("").as_posix()
        if image_id in seen:
            raise ValueError(f"two images share the id {image_id!r} in {folder}: {seen[image_id]} and {path.name}; "
                             "rename one")
        seen[image_id] = path.name
        refs.append(ImageRef(image_id, str(path)))
    return refs


def index_images(source) -> list[ImageRef]:
    """All photos of ``source``: a folder of ``*.tar`` shards, one shard, a glob of shards, or a folder of images."""
    source = Path(str(source)).expanduser()
    shards = _shard_paths(source)
    if shards:
        refs = [ref for shard in shards for ref in index_shard(shard)]
    elif source.is_dir():
        refs = index_folder(source)
    else:
        raise ValueError(f"`images` must be a folder of images, a folder of .tar shards, a .tar file or a glob "
                         f"of them, got {str(source)!r} (not found)")
    ids = [ref.id for ref in refs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"`images` {str(source)!r} holds duplicate image ids (same key twice in a shard?)")
    if not refs:
        raise ValueError(f"`images` {str(source)!r} holds no images (extensions {IMAGE_EXTENSIONS})")
    return refs


def read_image(ref: ImageRef) -> torch.Tensor:
    """The photo as float32 RGB ``[3,H,W]`` in [0,1]."""
    if ref.offset < 0:
        return read_rgb(ref.path)
    with open(ref.path, "rb") as handle:
        handle.seek(ref.offset)
        data = handle.read(ref.size)
    if len(data) != ref.size:
        raise SampleError(f"shard {ref.path} is truncated at {ref.id}")
    return read_rgb(data, f"{ref.id} in {ref.path}")


def label_path(labels: Path, ref: ImageRef) -> Path:
    """Where the pseudo label of ``ref`` is cached."""
    return Path(labels) / f"{ref.id}{LABEL_SUFFIX}"


def save_label(path: Path, disparity: np.ndarray, overwrite: bool = False) -> bool:
    """Write float16 disparity ``[H,W]`` atomically (temporary file, then rename). Returns False if it existed."""
    if path.exists() and not overwrite:
        return False
    values = np.nan_to_num(np.asarray(disparity, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(np.abs(values).max()) if values.size else 0.0
    if peak > FLOAT16_MAX:  # keep float16 finite; disparity is affine-invariant anyway
        values = values * (FLOAT16_MAX / peak)
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, values.astype(np.float16))

    write_atomic(path, write, overwrite=True)  # `path` was checked above; a concurrent writer wrote the same label
    return True


def load_label(path: Path) -> torch.Tensor:
    """A cached pseudo label as float32 ``[1,H,W]`` disparity."""
    if not path.is_file():
        raise SampleError(f"no pseudo label {path} (run train/pseudo_labels.py on these images)")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise SampleError(f"cannot read pseudo label {path}: {err}") from err
    if array.ndim != 2:
        raise SampleError(f"pseudo label must be [H,W], got shape {array.shape}: {path}")
    return torch.from_numpy(array.astype(np.float32))[None]  # [1,H,W]
