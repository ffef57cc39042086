"""Even out fast exposure changes within a shot before the model sees the frames (``align`` and ``stabilize``).

Auto-exposure hunting, a flickering light or a dimmer scales the whole picture from one frame to the next. A depth
model answers each frame anew, and a change of brightness changes its answer by more than a scale and a shift (the
random test model's frame-to-frame change is 0.07 of the depth range on a still shot pumping by ±25 %), which no
alignment of the outputs can remove. So the temporal modes level the pictures first, as a video editor's deflicker
does:

1. Each frame is area-averaged to a grid of at most :data:`GRID` cells on its long edge (luminance).
2. Its exposure relative to the previous frame is the median, over cells neither frame clips (no pixel of the cell
   at :data:`BRIGHT` or more, the cell's mean above :data:`DARK`), of the log ratio of the two frames' cells: a
   global gain moves every cell by the same log ratio, moving objects and noise are outvoted. The frame's log
   exposure (relative to its shot's first frame) is the median, over the shot's last ``reach`` frames, of that
   frame's exposure plus this ratio: the consensus of several paths, where a chain of single steps would let each
   step's error (codec noise) drift.
3. The target exposure is the brightest within ``reach`` frames either way in the same shot (the frames are
   delivered ``reach`` frames late), so fast changes (flicker, hunting, a flash) are taken out and slow ones pass.
   Brightening to the brightest frame, not darkening to a middle one, is what makes the frames agree: highlights
   the bright frames clipped are clipped alike in every levelled frame, where darkening a clipped frame would leave
   its highlights dimmer than the others'. Each frame is multiplied by ``exp(target - exposure)``, at most
   :data:`MAX_GAIN`, and clipped to [0, 1]; a gain within 3 % of one (:data:`STEADY`) is not applied, so footage
   of a steady exposure passes untouched.
4. A picture cut (:class:`~.shots.ShotDetector`) starts a new shot at its own exposure.

A clip of steady exposure passes unchanged, bit for bit. ``--temporal off`` sees the frames as decoded.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F

from .shots import ShotDetector, frame_rgb

GRID = 32  # cells on the long edge of the exposure grid
DARK, BRIGHT = 0.02, 0.98  # a cell this dark, or with a pixel this bright, says nothing about the gain
MAX_GAIN = 2.0  # the most a frame is brightened
REACH = 7  # frames looked at either way (a quarter of a second at 30 fps); as many are held back
STEADY = 0.03  # a log gain below this (3 %) is left alone: estimates on moving pictures wander by a few tenths of it
LUMA = (0.2126, 0.7152, 0.0722)


def cell_luma(frame: torch.Tensor) -> torch.Tensor:
    """Step 1: ``[h,w]`` area-averaged luminance of a ``[C,H,W]`` frame in [0, 1], NaN in cells where any pixel
    has a channel at :data:`BRIGHT` or more (clipped: the cell's average would understate a gain)."""
    rgb = frame_rgb(frame).float().cpu()  # [C,H,W]
    luma = rgb[0] if rgb.shape[0] == 1 else sum(w * c for w, c in zip(LUMA, rgb))  # [H,W]
    height, width = luma.shape
    scale = min(1.0, GRID / max(height, width))
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    cells = F.adaptive_avg_pool2d(luma[None, None], size)[0, 0]  # [h,w]
    brightest = F.adaptive_max_pool2d(rgb.amax(0)[None, None], size)[0, 0]  # [h,w]
    return cells.masked_fill(brightest >= BRIGHT, float("nan"))


def relative_exposure(previous: torch.Tensor, current: torch.Tensor) -> float:
    """Step 2: log of ``current``'s exposure over ``previous``'s (0.0 where no cell is usable in both)."""
    if previous.shape != current.shape:
        return 0.0
    usable = (previous > DARK) & (current > DARK)  # NaN (clipped) compares False
    if not bool(usable.any()):
        return 0.0
    return float((current[usable].log() - previous[usable].log()).median())


def levelled(frames: Iterable[torch.Tensor], reach: int = REACH, gains: list[float] | None = None,
             shots: list[int] | None = None) -> Iterator[torch.Tensor]:
    """The ``[C,H,W]`` frames (float in [0, 1], as the predictor takes them) levelled, in order, each delivered once
    ``reach`` more have been read (see the module docstring); the input frames are not changed. ``gains`` and
    ``shots`` (lists) receive each frame's gain and shot (0, 1, ... as picture cuts start new ones) before it is
    delivered."""
    if reach < 0:
        raise ValueError(f"`reach` must be >= 0 frames, got {reach}")
    detector = ShotDetector()
    pending: deque = deque()  # (shot, log exposure, frame) read but not delivered
    behind: deque = deque(maxlen=reach)  # (shot, log exposure) of the last delivered frames
    recent: deque = deque(maxlen=max(1, reach))  # (cells, log exposure) of the shot's last frames
    shot = 0

    def deliver() -> torch.Tensor:
        frame_shot, own, frame = pending.popleft()
        near = [e for s, e, *_ in (*behind, *pending) if s == frame_shot]
        log_gain = min(math.log(MAX_GAIN), max([own, *near]) - own)  # >= 0
        log_gain = 0.0 if log_gain < STEADY else log_gain
        behind.append((frame_shot, own))
        if gains is not None:
            gains.append(math.exp(log_gain))
        if shots is not None:
            shots.append(frame_shot)
        return frame if log_gain == 0.0 else (frame * math.exp(log_gain)).clamp_(0.0, 1.0)

    for index, frame in enumerate(frames):
        cells = cell_luma(frame)
        if detector.update(frame) and index > 0:  # a new shot starts at its own exposure
            shot = shot + 1
            recent.clear()
        # against each of the shot's last frames, not the previous one only: a chain of single steps would
        # accumulate each step's error (codec noise) into a drift
        exposure = statistics.median([e + relative_exposure(c, cells) for c, e in recent]) if recent else 0.0
        recent.append((cells, exposure))
        pending.append((shot, exposure, frame))
        if len(pending) > reach:
            yield deliver()
    while pending:
        yield deliver()


def level_exposure(frames: torch.Tensor, reach: int = REACH) -> tuple[torch.Tensor, list[float]]:
    """A ``[T,C,H,W]`` clip levelled and each frame's gain. ``frames`` is never changed: it is returned as it is when
    no frame needs a gain (no copy of a long clip), else a copy with the levelled frames in place."""
    gains: list[float] = []
    out = frames
    for index, frame in enumerate(levelled(frames, reach, gains)):
        if gains[index] != 1.0:
            if out is frames:
                out = frames.clone()
            out[index] = frame
    return out, gains
