"""Shot cuts decided from the pictures, not from the depth: a global exposure change or a small motion is not a cut.

A per-frame depth model answers every frame anew, so how much its depth changed says as much about the model as
about the video: the less steady the model, the more "cuts" a depth-based rule finds. A cut is a property of the
picture. Each frame is reduced to a small signature and compared with the previous one:

1. Area-average the frame down to at most :data:`SIGNATURE_EDGE` pixels on its long edge (noise, grain and
   compression artefacts average out; a motion of a few pixels becomes a fraction of one).
2. Replace each colour channel by its ranks, scaled to [0, 1] (ties share their mean rank). A change of exposure,
   gain, gamma or contrast that applies to the whole frame is a monotone map of each channel and leaves the ranks
   unchanged, up to clipping.
3. The change between two frames is the mean absolute difference of their rank maps, the smallest over shifts of
   up to one signature pixel (a pan or a shake of a few percent of the frame).

Two unrelated pictures score about 1/3 (independent uniform ranks), the same shot a few hundredths. A frame starts
a new shot when its change exceeds ``threshold`` and also ``ratio`` times the median change of the recent frames
(``threshold`` itself before there are any), so steady fast motion (every change high) is not cut frame after
frame.

Everything is numpy/torch: no optional dependency, a few hundred microseconds per frame at any size.
"""

from __future__ import annotations

import logging
from collections import deque

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

SIGNATURE_EDGE = 48  # long edge of the signature, in pixels
MAX_SHIFT = 1  # signature pixels searched either way when comparing two frames


def frame_rgb(frame) -> torch.Tensor:
    """A video frame as ``[C,H,W]`` float32 in [0, 1]: from ``[C,H,W]`` float (the predictor's input), or ``[H,W,C]``
    uint8 (a decoded frame). Grey (C=1) stays grey; alpha (C=2, 4) is dropped."""
    if isinstance(frame, np.ndarray):
        frame = torch.from_numpy(np.ascontiguousarray(frame))
    if frame.dtype == torch.uint8:  # [H,W,C] as decoded
        frame = (frame[..., None] if frame.ndim == 2 else frame).permute(2, 0, 1).float().div_(255.0)
    if frame.ndim != 3 or frame.shape[0] not in (1, 2, 3, 4):
        raise ValueError(f"a frame must be [C,H,W] float in [0,1] or [H,W,C] uint8 with 1-4 channels, got shape "
                         f"{tuple(frame.shape)} ({frame.dtype})")
    return frame[:1] if frame.shape[0] == 2 else frame[:3].float()


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks of a flat array scaled to [0, 1], ties sharing their mean rank (a flat array gives 0.5 everywhere)."""
    unique, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    if len(unique) == 1:
        return np.full(values.shape, 0.5)
    ends = np.cumsum(counts)
    mean_rank = ends - (counts + 1) / 2.0  # 0-based mean rank of each distinct value
    return mean_rank[inverse] / (len(values) - 1)


def signature(frame) -> np.ndarray:
    """Steps 1-2 of the module docstring: ``[C,h,w]`` float64 rank maps, long edge at most :data:`SIGNATURE_EDGE`."""
    rgb = frame_rgb(frame)  # [C,H,W]
    height, width = rgb.shape[-2:]
    scale = min(1.0, SIGNATURE_EDGE / max(height, width))
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    small = F.adaptive_avg_pool2d(rgb[None].cpu(), size)[0].double().numpy()  # [C,h,w], area average
    return np.stack([_ranks(channel.reshape(-1)).reshape(channel.shape) for channel in small])


def change(previous: np.ndarray, current: np.ndarray, max_shift: int = MAX_SHIFT) -> float:
    """Step 3: mean |rank difference|, the least over shifts of up to ``max_shift`` signature pixels."""
    if previous.shape != current.shape:
        return 1.0  # the picture size changed: nothing to compare
    _, height, width = current.shape
    best = float("inf")
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            if height - abs(dy) < 1 or width - abs(dx) < 1:
                continue
            a = previous[:, max(0, dy):height + min(0, dy), max(0, dx):width + min(0, dx)]
            b = current[:, max(0, -dy):height + min(0, -dy), max(0, -dx):width + min(0, -dx)]
            best = min(best, float(np.abs(a - b).mean()))
    return best


class ShotDetector:
    """Streams frames and says which start a new shot (the first frame always does). Holds one small signature and
    the last ``history`` changes."""

    def __init__(self, threshold: float = 0.12, ratio: float = 3.0, history: int = 8):
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"`threshold` must be in (0, 1), got {threshold}")
        if not ratio >= 1.0:
            raise ValueError(f"`ratio` must be >= 1, got {ratio}")
        self.threshold, self.ratio = threshold, ratio
        self.previous: np.ndarray | None = None
        self.recent: deque = deque(maxlen=history)
        self.frames = 0
        self.last_change = 0.0

    def update(self, frame) -> bool:
        """Whether ``frame`` starts a new shot."""
        current = signature(frame)
        self.frames += 1
        previous, self.previous = self.previous, current
        if previous is None:
            return True
        self.last_change = score = change(previous, current)
        typical = float(np.median(self.recent)) if self.recent else self.threshold
        cut = score > self.threshold and score > self.ratio * typical
        if cut:  # the cut's own change says nothing of how the video usually changes: not kept
            log.debug("picture cut at frame %d (change %.3f, recent median %.3f)", self.frames, score, typical)
        else:
            self.recent.append(score)
        return cut


def detect_cuts(frames, **settings) -> list[int]:
    """Indices of the frames that start a new shot after the first, for a ``[T,C,H,W]`` batch or any iterable of
    frames (see :func:`frame_rgb`)."""
    detector = ShotDetector(**settings)
    return [index for index, frame in enumerate(frames) if detector.update(frame) and index > 0]
