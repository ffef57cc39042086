"""Depth for frame sequences (videos, numbered image folders) in bounded memory: two passes over a disk cache.

Pass 1 runs the model frame batch by frame batch, aligns each frame over time when asked
(:mod:`fiffdepth_core.method.temporal`) and appends the float32 depth to a cache file, keeping only the running minimum
and maximum. Between the passes, whole-sequence bounds come from the cache: the affine map that takes aligned depth
to [0, 1] and the ControlNet normalisation quantiles (a fine histogram, read frame by frame). Pass 2 reads each
frame back, applies the bounds and hands it to a sink that writes files or video frames. The cache is read with
plain file reads (not a memory map), so the process's resident memory does not grow with the clip's length.

:func:`stream_pass` is the alternative for clips of any length: one pass and no cache. Each frame is written once
the ``window // 2`` frames after it are known; its bounds are the mean of the per-frame bounds over the ``window``
frames around it (within its shot), so they change slowly and never jump, and memory holds ``window // 2`` frames.

Shape letters: T frames, H x W frame size, B frames per model call.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from ..method.postprocess import controlnet_depth
from ..method.stats import quantiles
from ..method.denoise import steady_frames
from ..method.temporal import AlignConfig, TemporalAligner, unit_range

log = logging.getLogger(__name__)

HISTOGRAM_BINS = 1 << 16  # quantile resolution: (max - min) / 65536, far below one 8-bit ControlNet level
HISTOGRAM_SAMPLES = 1 << 18  # pixels per frame counted for the whole-sequence quantiles (a fixed strided grid)


class DepthCache:
    """``[H,W]`` float32 frames appended to one file, read back one at a time; tracks the value range."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = open(self.path, "w+b")
        self.shape: tuple[int, int] | None = None
        self.count = 0
        self.low, self.high = float("inf"), float("-inf")

    def append(self, depth: np.ndarray) -> None:
        depth = np.ascontiguousarray(depth, dtype=np.float32)
        if self.shape is None:
            self.shape = depth.shape
        elif depth.shape != self.shape:
            raise ValueError(f"frame {self.count} is {depth.shape[1]}x{depth.shape[0]}, but earlier frames were "
                             f"{self.shape[1]}x{self.shape[0]}: a sequence's frames must share one size")
        self._file.seek(self.count * depth.nbytes)
        self._file.write(depth.tobytes())
        self.count += 1
        self.low, self.high = min(self.low, float(depth.min())), max(self.high, float(depth.max()))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < self.count:
            raise IndexError(f"frame {index} of {self.count}")
        size = self.shape[0] * self.shape[1]
        self._file.seek(index * size * 4)
        return np.frombuffer(self._file.read(size * 4), dtype=np.float32).reshape(self.shape)

    def __iter__(self):
        return (self[i] for i in range(self.count))

    def close(self) -> None:
        self._file.close()


def sample_stride(height: int, width: int) -> int:
    """The stride of the fixed grid of at most about :data:`HISTOGRAM_SAMPLES` pixels that quantiles are taken on."""
    return max(1, int(np.ceil(np.sqrt(height * width / HISTOGRAM_SAMPLES))))


def sequence_quantiles(cache: DepthCache, scale: float = 1.0, shift: float = 0.0,
                       qs: tuple[float, float] = (0.02, 0.98)) -> torch.Tensor:
    """The ``qs`` quantiles of ``scale * depth + shift`` over every cached frame, from a histogram of
    :data:`HISTOGRAM_BINS` bins (exact to one bin width) over a fixed strided grid of each frame."""
    low, high = cache.low * scale + shift, cache.high * scale + shift
    low, high = min(low, high), max(low, high)
    if not high > low:
        return torch.tensor([low, high], dtype=torch.float32)
    stride = sample_stride(*cache.shape)
    counts = np.zeros(HISTOGRAM_BINS, dtype=np.int64)
    for frame in cache:
        values = frame[::stride, ::stride] * np.float32(scale) + np.float32(shift)
        counts += np.histogram(values, bins=HISTOGRAM_BINS, range=(low, high))[0]
    cumulative = np.cumsum(counts)
    total, bin_width = int(cumulative[-1]), (high - low) / HISTOGRAM_BINS

    def value(rank: int) -> float:  # the rank-th smallest value (0-based), to half a bin: its bin's centre
        return low + (int(np.searchsorted(cumulative, rank + 1)) + 0.5) * bin_width

    out = []
    for q in qs:  # numpy's default (linear) definition: between the order statistics around q * (n - 1)
        position = q * (total - 1)
        below = int(np.floor(position))
        upper = value(min(below + 1, total - 1))
        out.append(value(below) + (position - below) * (upper - value(below)))
    return torch.tensor(out, dtype=torch.float32)


def batched(frames: Iterable[torch.Tensor], size: int) -> Iterable[torch.Tensor]:
    """``[3,H,W]`` frames -> ``[B,3,H,W]`` batches of at most ``size`` frames."""
    batch = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


def first_pass(frames: Iterable[torch.Tensor], predict: Callable[[torch.Tensor], torch.Tensor], batch_size: int,
               cache: DepthCache, temporal: str = "off", align: AlignConfig = AlignConfig(),
               progress: Callable[[int], None] | None = None, pictures: bool = True) -> TemporalAligner | None:
    """Predict every frame into ``cache`` (aligned with ``temporal="align"``, and filtered over time too with
    ``"stabilize"``); returns the aligner (its ``cuts`` and ``unsteady`` counts), None with ``temporal="off"``.
    ``pictures``: the frames themselves decide scene cuts and guide the filter (else the depth alone)."""
    aligner = TemporalAligner(align, stabilize=temporal == "stabilize") if temporal != "off" else None
    if aligner is not None and pictures:  # exposure levelled, still areas' noise out, before the model (denoise.py)
        frames = steady_frames(frames)
    for batch in batched(frames, batch_size):  # [B,3,H,W]
        depths = predict(batch)  # [B,H,W]
        for depth, picture in zip(depths, batch):
            if aligner is not None:
                depth, _ = aligner.update(depth, picture if pictures else None)
            cache.append(depth.float().cpu().numpy())
        if progress is not None:
            progress(len(depths))
    return aligner


def second_pass(cache: DepthCache, write: Callable[[int, torch.Tensor, torch.Tensor], None], temporal: str = "off",
                normalization: str = "whole_batch", progress: Callable[[int], None] | None = None) -> None:
    """Hand every cached frame to ``write(index, depth [H,W], controlnet [H,W])``.

    Aligned depth is mapped by one affine to span [0, 1] over the whole sequence; raw depth is passed on as the
    model made it. ControlNet maps use whole-sequence quantiles (``whole_batch``) or each frame's own.
    """
    scale, shift = unit_range(cache.low, cache.high) if temporal != "off" else (1.0, 0.0)
    bounds = sequence_quantiles(cache, scale, shift) if normalization == "whole_batch" else None
    for index, frame in enumerate(cache):
        depth = torch.from_numpy(frame * np.float32(scale) + np.float32(shift))  # [H,W]
        if temporal != "off":
            depth = depth.clamp_(0.0, 1.0)  # rounding only
        control = controlnet_depth(depth[None], normalization, bounds=bounds)[0]  # [H,W], near = white
        write(index, depth, control)
        if progress is not None:
            progress(1)


def frame_bounds(depth: torch.Tensor, qs: tuple[float, float] = (0.02, 0.98)) -> np.ndarray:
    """``[min, max, q_low, q_high]`` of one frame ``[H,W]`` (quantiles over a fixed strided grid of at most
    :data:`HISTOGRAM_SAMPLES` pixels, as the whole-clip histogram uses)."""
    stride = sample_stride(*depth.shape)
    low, high = quantiles(depth[::stride, ::stride].float().cpu(), qs).tolist()
    return np.array([float(depth.min()), float(depth.max()), low, high])


def stream_pass(frames: Iterable[torch.Tensor], predict: Callable[[torch.Tensor], torch.Tensor], batch_size: int,
                write: Callable[[int, torch.Tensor, torch.Tensor], None], window: int, temporal: str = "off",
                normalization: str = "whole_batch", align: AlignConfig = AlignConfig(),
                progress: Callable[[int], None] | None = None,
                pictures: bool = True) -> tuple[int, TemporalAligner | None]:
    """Predict, align and write every frame in one pass, with running-window bounds; returns (frames, the aligner
    or None with ``temporal="off"``). ``pictures`` as for :func:`first_pass`.

    Frame ``t``'s bounds are the means of :func:`frame_bounds` over the frames ``t - window // 2 .. t + window // 2``
    of its own shot (a scene cut ends a shot; frames without ``temporal`` are one shot). Aligned depth is mapped
    from the mean min/max to [0, 1] (clipped: a frame's own extremes may pass the mean); raw depth is written as
    the model made it. ControlNet maps take the mean quantiles (``whole_batch``) or their own (``per_image``).
    """
    if window < 1:
        raise ValueError(f"`window` must be >= 1 frame, got {window}")
    half = window // 2
    aligner = TemporalAligner(align, stabilize=temporal == "stabilize") if temporal != "off" else None
    if aligner is not None and pictures:
        frames = steady_frames(frames)
    pending: deque = deque()  # (index, shot, depth [H,W]) predicted but not written
    history: deque = deque()  # (index, shot, bounds [4]) of pending frames and up to `half` frames before them
    count = shot = 0

    def emit(index: int, frame_shot: int, depth: torch.Tensor) -> None:
        near = [b for i, s, b in history if s == frame_shot and abs(i - index) <= half]
        low, high, q_low, q_high = np.mean(near, axis=0)
        if aligner is not None:
            scale, shift = unit_range(low, high)
            depth = (depth * scale + shift).clamp_(0.0, 1.0)
            q_low, q_high = q_low * scale + shift, q_high * scale + shift
        bounds = torch.tensor([q_low, q_high], dtype=torch.float32) if normalization == "whole_batch" else None
        write(index, depth, controlnet_depth(depth[None], normalization, bounds=bounds)[0])
        while history and history[0][0] < index + 1 - half:  # no later frame looks this far back
            history.popleft()
        if progress is not None:
            progress(1)

    for batch in batched(frames, batch_size):  # [B,3,H,W]
        for depth, picture in zip(predict(batch), batch):  # [H,W], [3,H,W]
            depth = depth.float()
            if aligner is not None:
                depth, step = aligner.update(depth, picture if pictures else None)
                if step.cut and count > 0:
                    shot += 1
            depth = depth.cpu()
            history.append((count, shot, frame_bounds(depth)))
            pending.append((count, shot, depth))
            while pending and pending[0][0] + half <= count:  # the frames after it, up to half a window, are in
                emit(*pending.popleft())
            count += 1
    while pending:
        emit(*pending.popleft())
    return count, aligner
