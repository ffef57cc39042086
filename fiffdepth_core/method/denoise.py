"""Steady pictures for the temporal modes: exposure levelled, then the noise of still areas averaged out over time.

A per-frame depth model answers noise too. Compression, sensor grain and the rounding of a re-levelled dark frame
change each frame's pixels by a level or two, and an unsteady model answers that with depth that differs by more than
a scale and a shift (the random test model: a mean change of 0.005 of its input, after exposure levelling, moves its
depth by 0.035), which alignment of the outputs cannot remove. Where the picture has not changed, the pixels of the
frames around a frame are as good a view of it as its own, so ``align`` and ``stabilize`` give the model their
average, as a video editor's temporal noise reduction does:

1. Each frame is compared with the frames up to ``radius`` either way in its shot (after exposure levelling: see
   :mod:`.exposure`): the absolute difference of their channel means, averaged over a :data:`BOX` x :data:`BOX`
   neighbourhood (noise averages out there, a moving surface does not).
2. The noise level of a pair is the lower quartile of that difference over the frame (the still, flat quarter of
   any picture shows the noise alone, even in a pan), kept within :data:`LEVEL_RANGE`.
3. From each frame to the next, a pixel stood still where no shift of the earlier frame by one pixel (any of the
   eight ways) matches its neighbourhood better, by :data:`MARGIN` noise levels: a slow pan or drift over a smooth
   surface differs by little, but is matched better shifted.
4. A pixel takes a neighbour's value into its average only where it stood still at every step between the two
   frames (a pan of any speed breaks that chain at its first step, where a one-pixel test between frames far apart
   would miss it) and differs from the neighbour by less than :data:`GATE` times their noise level (a moving object
   or a new surface differs by far more). Those pixels keep the frame's own values: no trail, no lag. Still areas
   are averaged over up to ``2 * radius + 1`` frames.
5. The average is the frame plus the mean of the accepted differences, so a pixel no neighbour differs from is
   returned bit for bit: a clip without noise passes untouched where nothing moves.

The channel means make every comparison a third of the work; a change of colour alone, at the same brightness, is
not seen as motion (rare: such a pixel is averaged as if it were still). About 0.09 s per 1280 x 720 frame on two
CPU cores (``benchmarks/flicker.py --flow-cost``).

The frames are delivered ``radius`` frames late (the CLI holds them back; the node has the whole batch).
``--temporal off`` sees the frames as decoded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from itertools import count

import torch
import torch.nn.functional as F

from .exposure import REACH, levelled
from .stats import box_mean

BOX = 7  # pixels on the side of the neighbourhood a difference is averaged over
RADIUS = 3  # frames either way averaged into a still pixel
GATE = 6.0  # a neighbour's pixel counts while it differs by less than this many noise levels
MARGIN = 0.5  # ... and no one-pixel shift of the neighbour matches it better by this many noise levels
SHIFTS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
LEVEL_RANGE = (0.5 / 255, 2.0 / 255)  # the noise level's floor and cap (8-bit levels): the cap keeps the gate tight
SAMPLES = 1 << 16  # pixels per frame that the noise level is estimated from (a strided grid)


def guide(frame: torch.Tensor) -> torch.Tensor:
    """The ``[H,W]`` mean over the channels of a ``[C,H,W]`` frame: what the differences below compare (one
    channel, so each comparison costs a third)."""
    return frame.float().mean(0)


def difference(neighbour: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    """Step 1: ``[H,W]`` mean absolute difference of two guides ``[H,W]`` (:func:`guide`) over :data:`BOX` x
    :data:`BOX` pixels."""
    return box_mean((neighbour - frame).abs(), BOX)


def shifted_difference(neighbour: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    """Step 3: ``[H,W]`` the smallest :func:`difference` of the guides ``frame`` and ``neighbour`` shifted by one
    pixel, over the eight ways (each compared where both have pixels, its edge row or column repeated; inf for a
    frame too small to shift)."""
    height, width = frame.shape
    best = torch.full((height, width), float("inf"), device=frame.device)
    for dy, dx in SHIFTS:
        top, left = max(0, -dy), max(0, -dx)  # the part of the frame the shifted neighbour covers
        bottom, right = height - max(0, dy), width - max(0, dx)
        if bottom <= top or right <= left:
            continue
        diff = difference(neighbour[top + dy:bottom + dy, left + dx:right + dx], frame[top:bottom, left:right])
        diff = F.pad(diff[None, None], (left, width - right, top, height - bottom), mode="replicate")[0, 0]
        torch.minimum(best, diff, out=best)
    return best


def noise_level(diff: torch.Tensor) -> float:
    """Step 2: the lower quartile of ``diff`` ``[H,W]`` (on a strided grid of about :data:`SAMPLES` pixels), within
    :data:`LEVEL_RANGE`."""
    stride = max(1, int((diff.numel() / SAMPLES) ** 0.5))
    sample = diff[::stride, ::stride].reshape(-1)
    low = float(sample.kthvalue(max(1, sample.numel() // 4)).values)
    return min(max(low, LEVEL_RANGE[0]), LEVEL_RANGE[1])


def still_between(earlier: torch.Tensor, later: torch.Tensor) -> torch.Tensor:
    """Step 3 for the guides ``[H,W]`` of two consecutive frames: ``[H,W]`` True where the picture stood still
    between them (no one-pixel shift matches better)."""
    diff = difference(earlier, later)
    return diff <= shifted_difference(earlier, later) + MARGIN * noise_level(diff)


def average_still(frame: torch.Tensor, neighbours: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                  own: torch.Tensor | None = None) -> torch.Tensor:
    """Steps 4-5 for one ``[C,H,W]`` frame: averaged with each ``(neighbour, its guide, still)``'s neighbour where
    ``still`` ``[H,W]`` (the picture stood still at every step from the one frame to the other) and the two agree
    within the noise gate. ``own``: the frame's :func:`guide`, when it is at hand."""
    own = guide(frame) if own is None else own
    total = votes = None
    for neighbour, neighbour_guide, still in neighbours:
        diff = difference(neighbour_guide, own)
        agree = still & (diff < GATE * noise_level(diff))  # [H,W]
        step = torch.where(agree, neighbour - frame, 0.0)  # [C,H,W], 0 where the neighbour does not agree
        total = step if total is None else total.add_(step)
        votes = agree.float() if votes is None else votes.add_(agree)
    if total is None:
        return frame
    return frame + total / (votes + 1.0)


def denoised(frames: Iterable[torch.Tensor], shots: Iterable[int], radius: int = RADIUS) -> Iterator[torch.Tensor]:
    """The ``[C,H,W]`` frames (float in [0, 1]) with their still areas averaged over up to ``radius`` frames either
    way in the same shot (``shots`` gives each frame's shot), in order, each delivered once ``radius`` more frames of
    its shot have been read (see the module docstring)."""
    if radius < 0:
        raise ValueError(f"`radius` must be >= 0 frames, got {radius}")
    window: deque = deque()  # [frame, guide, still to the next frame]: up to `radius` delivered frames, then the rest
    done = 0  # how many frames at the front of `window` are delivered already

    def deliver() -> torch.Tensor:
        nonlocal done
        (frame, own, _), neighbours = window[done], []
        before = range(done - 1, max(-1, done - radius - 1), -1)
        for side in (before, range(done + 1, min(len(window), done + radius + 1))):
            chain = None
            for k in side:  # outwards: still from the frame to this neighbour, step by step
                link = window[k][2] if k < done else window[k - 1][2]
                chain = link if chain is None else chain & link  # a new mask each step: the links stay as they are
                neighbours.append((window[k][0], window[k][1], chain))
        done += 1
        while done > radius:  # the frames further back are no one's neighbours any more
            window.popleft()
            done -= 1
        return average_still(frame, neighbours, own)

    last_shot = None
    for frame, shot in zip(frames, shots):
        if window and (last_shot != shot or window[-1][0].shape != frame.shape):  # a new shot (or size): the
            # last one's frames have all their neighbours
            while done < len(window):
                yield deliver()
            window.clear()
            done = 0
        entry = [frame, guide(frame), None]
        if window:
            window[-1][2] = still_between(window[-1][1], entry[1])
        window.append(entry)
        last_shot = shot
        if len(window) - done > radius:
            yield deliver()
    while done < len(window):
        yield deliver()


def steady_frames(frames: Iterable[torch.Tensor], reach: int = REACH, radius: int = RADIUS,
                  gains: list[float] | None = None) -> Iterator[torch.Tensor]:
    """What ``align`` and ``stabilize`` predict from: the frames exposure-levelled (:func:`.exposure.levelled`),
    then denoised in their still areas (:func:`denoised`); delivered ``reach + radius`` frames late."""
    shots: list[int] = []
    pictures = levelled(frames, reach, gains, shots)  # appends each frame's shot before delivering the frame
    return denoised(pictures, (shots[index] for index in count()), radius)  # zip reads the frame, then its shot


def steady_clip(frames: torch.Tensor, reach: int = REACH, radius: int = RADIUS) -> torch.Tensor:
    """:func:`steady_frames` for a ``[T,C,H,W]`` clip (the node's IMAGE batch): a new tensor, ``frames`` unchanged."""
    out = torch.empty_like(frames)
    for index, frame in enumerate(steady_frames(frames, reach, radius)):
        out[index] = frame
    return out
