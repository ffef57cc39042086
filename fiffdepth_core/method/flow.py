"""Optical flow between consecutive video frames, for the flow-guided temporal filter (:mod:`.temporal_flow`).

Frames are reduced to grey at most :data:`FLOW_EDGE` pixels on the long edge and histogram-equalised, so a change
of exposure between two frames does not read as motion. Two backends give the same interface:

* ``opencv``: OpenCV's DIS optical flow (Kroeger et al., 2016), when ``cv2`` can be imported (any OpenCV wheel:
  ``opencv-python-headless`` is in the ``standalone`` extra; the WebUIs ship one; ComfyUI does not);
* ``torch``: a pyramidal Lucas-Kanade flow written here in a few tensor operations, when OpenCV is absent. Coarser
  than DIS (the flicker benchmark compares both), but always there, since torch is.

Flows are ``[2,h,w]`` float32 tensors of (x, y) displacements in pixels of the size they were computed at:
``backward`` maps each pixel of the current frame to where it was in the previous one, ``forward`` the reverse.
:func:`resize_flow` brings them to the depth's size, :func:`warp` fetches a map along them, and
:func:`consistent` is the forward-backward check that marks occlusions (Sundaram et al., 2010).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

FLOW_EDGE = 512  # long edge (px) at which flow is computed
BACKENDS = ("auto", "opencv", "torch")
_LK_LEVELS, _LK_ITERATIONS, _LK_RADIUS = 5, 3, 3


def _cv2():
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def resolve_backend(backend: str = "auto") -> str:
    """``opencv`` where OpenCV can be imported (``auto``), else ``torch``; ImportError if ``opencv`` is asked for
    without it."""
    if backend not in BACKENDS:
        raise ValueError(f"`flow_backend` must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        return "torch"
    if _cv2() is not None:
        return "opencv"
    if backend == "opencv":
        raise ImportError("the opencv flow backend needs OpenCV: pip install opencv-python-headless")
    return "torch"


def prepare(rgb: torch.Tensor, edge: int = FLOW_EDGE) -> torch.Tensor:
    """``[C,H,W]`` float frame in [0,1] -> ``[h,w]`` uint8 grey, long edge at most ``edge`` (area average),
    histogram-equalised (a global exposure change leaves it nearly unchanged)."""
    grey = rgb[0] if rgb.shape[0] == 1 else 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]  # [H,W]
    height, width = grey.shape
    scale = min(1.0, edge / max(height, width))
    if scale < 1.0:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        grey = F.interpolate(grey[None, None].float(), size=size, mode="area")[0, 0]
    levels = grey.float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).cpu()  # [h,w]
    counts = torch.bincount(levels.reshape(-1).long(), minlength=256)
    cdf = counts.cumsum(0)
    first = int(cdf[counts.nonzero()[0]]) if counts.any() else 0
    total = int(cdf[-1])
    if total == first:  # one grey level: nothing to equalise
        return levels
    lut = ((cdf - first).clamp(min=0).double() * 255.0 / (total - first)).round().to(torch.uint8)
    return lut[levels.long()]


def pair_flows(previous: torch.Tensor, current: torch.Tensor, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(backward, forward)`` flows ``[2,h,w]`` between two :func:`prepare`\\ d frames."""
    if backend == "opencv":
        cv2 = _cv2()
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        prev, cur = previous.numpy(), current.numpy()
        backward = torch.from_numpy(dis.calc(cur, prev, None)).permute(2, 0, 1)  # cur(x) ~ prev(x + backward)
        forward = torch.from_numpy(dis.calc(prev, cur, None)).permute(2, 0, 1)
        return backward.contiguous(), forward.contiguous()
    prev, cur = previous.float().div(255.0), current.float().div(255.0)
    return lucas_kanade(cur, prev), lucas_kanade(prev, cur)


def _pyramid(image: torch.Tensor, levels: int) -> list[torch.Tensor]:
    out = [image[None, None]]  # [1,1,h,w]
    while len(out) < levels and min(out[-1].shape[-2:]) >= 16:
        out.append(F.avg_pool2d(out[-1], 2, ceil_mode=True))
    return out


def lucas_kanade(source: torch.Tensor, target: torch.Tensor, levels: int = _LK_LEVELS,
                 iterations: int = _LK_ITERATIONS, radius: int = _LK_RADIUS) -> torch.Tensor:
    """Dense flow ``[2,h,w]`` with ``source(x) ~ target(x + flow(x))``: coarse to fine over an image pyramid, a few
    Gauss-Newton steps per level, each solving the 2x2 Lucas-Kanade system over a (2 radius + 1)² window (slightly
    regularised, so flat regions keep the flow brought up from the coarser level)."""
    sources, targets = _pyramid(source, levels), _pyramid(target, levels)
    flow = torch.zeros(1, 2, *sources[-1].shape[-2:])
    kernel = 2 * radius + 1
    for src, tgt in zip(reversed(sources), reversed(targets)):  # [1,1,h,w] each
        if flow.shape[-2:] != src.shape[-2:]:
            ratio = torch.tensor([src.shape[-1] / flow.shape[-1], src.shape[-2] / flow.shape[-2]]).view(1, 2, 1, 1)
            flow = F.interpolate(flow, size=src.shape[-2:], mode="bilinear", align_corners=False) * ratio
        gy, gx = torch.gradient(src[0, 0])  # [h,w] each
        moved, _ = warp(tgt[0], flow[0])  # [1,h,w]
        error = _window_error(moved, src, kernel)
        for _ in range(iterations):
            ty, tx = torch.gradient(moved[0])
            ix, iy = 0.5 * (gx + tx), 0.5 * (gy + ty)
            it = moved[0] - src[0, 0]
            terms = torch.stack([ix * ix, ix * iy, iy * iy, ix * it, iy * it])[None]  # [1,5,h,w]
            axx, axy, ayy, bx, by = F.avg_pool2d(terms, kernel, stride=1, padding=kernel // 2,
                                                 count_include_pad=False)[0]
            damping = 0.05 * float((axx + ayy).mean()) + 1e-9  # Tikhonov: flat windows keep the coarser flow
            axx, ayy = axx + damping, ayy + damping
            det = axx * ayy - axy * axy
            step = torch.stack([-(ayy * bx - axy * by) / det, -(axx * by - axy * bx) / det]).clamp(-1.0, 1.0)
            trial = flow + step[None]
            trial_moved, _ = warp(tgt[0], trial[0])
            trial_error = _window_error(trial_moved, src, kernel)
            better = trial_error < error  # [h,w]: a step is kept only where it matches the window better
            flow = torch.where(better, trial, flow)
            moved = torch.where(better, trial_moved, moved)
            error = torch.minimum(trial_error, error)
    return flow[0]


def _window_error(moved: torch.Tensor, source: torch.Tensor, kernel: int) -> torch.Tensor:
    """Mean squared difference over each pixel's window, ``[h,w]``."""
    return F.avg_pool2d((moved[None] - source).square(), kernel, stride=1, padding=kernel // 2,
                        count_include_pad=False)[0, 0]


def resize_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A flow ``[2,h,w]`` brought to ``size`` = (H, W), its vectors scaled with it."""
    if tuple(flow.shape[-2:]) == tuple(size):
        return flow
    ratio = torch.tensor([size[1] / flow.shape[-1], size[0] / flow.shape[-2]]).view(2, 1, 1)
    return F.interpolate(flow[None], size=size, mode="bilinear", align_corners=False)[0] * ratio


def warp(maps: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``maps`` ``[C,H,W]`` fetched at ``x + flow(x)`` (bilinear), and ``[H,W]`` whether that point is inside."""
    _, height, width = maps.shape
    flow = flow.to(maps.device, torch.float32)
    ys = torch.arange(height, dtype=torch.float32, device=maps.device).view(-1, 1)
    xs = torch.arange(width, dtype=torch.float32, device=maps.device).view(1, -1)
    x, y = xs + flow[0], ys + flow[1]  # [H,W]
    grid = torch.stack([(2.0 * x + 1.0) / width - 1.0, (2.0 * y + 1.0) / height - 1.0], dim=-1)  # [H,W,2]
    out = F.grid_sample(maps[None].float(), grid[None], mode="bilinear", padding_mode="border",
                        align_corners=False)[0]
    inside = (x >= -0.5) & (x <= width - 0.5) & (y >= -0.5) & (y <= height - 0.5)
    return out, inside


def consistent(backward: torch.Tensor, forward: torch.Tensor, alpha: float = 0.01,
               beta: float = 0.5) -> torch.Tensor:
    """``[H,W]``: where following ``backward`` and then ``forward`` comes back to the start, within
    ``alpha * (|b|² + |f|²) + beta`` squared pixels (Sundaram et al., 2010); elsewhere the point was hidden or
    the flow is wrong."""
    there, inside = warp(forward, backward)  # [2,H,W]: the forward flow where each pixel came from
    miss = (backward + there).square().sum(0)
    return inside & (miss <= alpha * (backward.square().sum(0) + there.square().sum(0)) + beta)
