"""Reading images in background workers while the model runs, then batching consecutive same-size images.

A folder run would otherwise decode every PNG/JPEG on the main thread between model calls. Here a
``torch.utils.data.DataLoader`` decodes ahead in ``workers`` processes (in input order), and :func:`image_batches`
groups consecutive images of one size into batches, as the single-threaded reader did, stacked into page-locked
memory when the model runs on a CUDA device. ``workers=0`` reads on the main thread.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

log = logging.getLogger(__name__)

Decode = Callable[[Path], torch.Tensor]  # an image file -> [3,H,W] float in [0,1]; raises ValueError/OSError
DECODE_ERRORS = (ValueError, OSError)


class DecodedImages(Dataset):
    """``(index, image or None, error message or None)`` per path; a failed decode is reported, not raised, so the
    caller decides (stop, or skip and list it) in input order."""

    def __init__(self, paths: Sequence[Path], decode: Decode):
        self.paths, self.decode = list(paths), decode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        item = self.paths[index]
        try:
            return index, self.decode(item), None
        except DECODE_ERRORS as err:
            message = str(err).strip() or type(err).__name__
            name = str(item) if isinstance(item, (str, os.PathLike)) else None
            return index, None, message if name is None or name in message else f"cannot read {name}: {message}"


def default_workers(processes_per_node: int = 1) -> int:
    """Decoding workers per process: up to 4, leaving a core to each process's main thread; 0 on one core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(4, cores // max(1, processes_per_node) - 1))


class _Taken(Sampler):
    """The indices of the paths ``take`` accepts, asked lazily in order, on this process (a DataLoader draws them
    only as its workers need more, so a path is taken just before it is decoded)."""

    def __init__(self, paths: Sequence, take: Callable[[object], bool] | None):
        self.paths, self.take = paths, take

    def __iter__(self) -> Iterator[int]:
        return (i for i, path in enumerate(self.paths) if self.take is None or self.take(path))

    def __len__(self) -> int:
        return len(self.paths)


def decoded(paths: Sequence, decode: Callable, workers: int = 0, prefetch: int = 4,
            take: Callable[[object], bool] | None = None) -> Iterator[tuple[Path, torch.Tensor | None, str | None]]:
    """``(path, decode(path) or None, error message or None)`` for every path, in order, decoded by ``workers``
    background processes (0: on this thread). ``decode`` may return any picklable value. ``take(path)``, when given,
    is asked on this process just before a path goes to be decoded; the paths it refuses are left out (a run sharing
    its output folder claims its inputs this way: :mod:`fiffdepth_core.app.claims`)."""
    if workers < 0:
        raise ValueError(f"`workers` must be >= 0, got {workers}")
    dataset = DecodedImages(paths, decode)
    order = _Taken(dataset.paths, take)
    if workers == 0 or len(paths) <= 1:
        for index in order:
            _, image, error = dataset[index]
            yield dataset.paths[index], image, error
        return
    loader = DataLoader(dataset, batch_size=None, sampler=order, num_workers=min(workers, len(paths)),
                        prefetch_factor=prefetch, persistent_workers=False)
    for index, image, error in loader:
        yield dataset.paths[index], image, error


def image_batches(paths: Sequence[Path], decode: Decode, batch_size: int, workers: int = 0, pin_memory: bool = False,
                  on_error: Callable[[Path, str], None] | None = None,
                  take: Callable[[Path], bool] | None = None) -> Iterator[tuple[list[Path], torch.Tensor]]:
    """Consecutive same-size images, at most ``batch_size`` at a time: ``(paths, [B,3,H,W] tensor)``.

    A path that fails to decode goes to ``on_error(path, message)`` (which may raise to stop the run); without
    ``on_error`` the failure is raised as a ValueError naming the file. ``take``: see :func:`decoded`.
    """
    batch_paths: list[Path] = []
    tensors: list[torch.Tensor] = []
    for path, image, error in decoded(paths, decode, workers, take=take):
        if image is None:
            if on_error is None:
                raise ValueError(error)
            on_error(path, error)
            continue
        if tensors and (image.shape != tensors[0].shape or len(tensors) == batch_size):
            yield batch_paths, _stack(tensors, pin_memory)
            batch_paths, tensors = [], []
        batch_paths.append(path)
        tensors.append(image)
    if tensors:
        yield batch_paths, _stack(tensors, pin_memory)


def _stack(tensors: list[torch.Tensor], pin_memory: bool) -> torch.Tensor:
    """``[B,...]`` from B same-shape tensors; in page-locked memory (a faster, asynchronous copy to a GPU) if asked."""
    if not pin_memory:
        return torch.stack(tensors)
    out = torch.empty((len(tensors), *tensors[0].shape), dtype=tensors[0].dtype, pin_memory=True)
    return torch.stack(tensors, out=out)
