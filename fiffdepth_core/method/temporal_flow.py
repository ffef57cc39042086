"""The flow-guided temporal filter of ``stabilize``: per-pixel averaging over time that follows the picture.

Where the RGB frames are at hand, each pixel's history can come from where that point of the scene was in the
previous frame, along the optical flow (:mod:`.flow`), instead of from the same pixel. The state is two maps: the
previous output and how many frames' worth of evidence it holds (its ``count``: its noise level is the frames'
noise level over the square root of it). Per frame, a Kalman filter on each pixel:

1. Flow between the previous and the current picture, both ways. A pixel whose forward-backward round trip misses
   (an occlusion, or a wrong flow) or that comes from outside the frame has no history along the flow.
2. Two candidates for the history: the previous output at the same pixel, and fetched along the flow. The one that
   predicts the current depth better over the pixel's 5 x 5 neighbourhood wins, with a margin of ``still_sigmas``
   squared noise levels for the same pixel: where the depth there holds still (a wall or floor the camera slides
   along, a still shot whose flow is only noise) warping would merely move residual noise around; at a moving
   edge, an object, a slope seen from a moving camera, the tracked history is clearly better and is taken, so the
   output does not lag behind the picture.
3. Process noise: ``count -> count / (1 + process_noise * count)``: the history fades gradually (at most about
   ``1 / sqrt(process_noise)`` frames are averaged), so slow real changes are followed.
4. The frame's noise level ``sigma`` is read on its quietest quarter, as in :class:`~.temporal.TemporalFilter`, from
   the change against the history (scaled by the history's own uncertainty). A pixel whose change exceeds
   ``noise_sigmas`` noise levels drops its history through a soft gate: something new is there. Where the picture
   itself holds still along the flow (its local brightness residual, after histogram equalisation, is within three
   of its own noise levels) the gate is ``picture_gate`` times wider: a large change of depth with no change in the
   picture is the model being unsteady (new exposure, noise, compression), not motion.
5. ``out = history + (current - history) / (count + 1)`` and ``count += 1``: the running mean along the flow.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .flow import FLOW_EDGE, consistent, pair_flows, prepare, resize_flow, resolve_backend, warp
from .shots import frame_rgb
from .stats import box_mean

Q25_TO_SIGMA = 3.1388  # first quartile of |x| -> standard deviation of a normal distribution
WINDOW = 5  # neighbourhood (px) over which the two histories are compared


def _grid(height: int, width: int, budget: int) -> tuple[slice, slice]:
    stride = max(1, int(np.ceil(np.sqrt(height * width / budget))))
    return slice(None, None, stride), slice(None, None, stride)


def _quiet_sigma(change: torch.Tensor, usable: torch.Tensor, budget: int) -> float:
    """``Q25_TO_SIGMA`` x the first quartile of ``|change|`` over the ``usable`` pixels of a sample grid."""
    rows, cols = _grid(*change.shape, budget)
    values = change[rows, cols][usable[rows, cols]]
    if values.numel() < 16:
        values = change[rows, cols].reshape(-1)
    quartile = float(np.quantile(np.abs(values.double().cpu().numpy()), 0.25))
    return max(Q25_TO_SIGMA * quartile, 1e-12)


def _upsample(grey: torch.Tensor, size: tuple[int, int], device) -> torch.Tensor:
    return F.interpolate(grey.float()[None, None], size=size, mode="bilinear", align_corners=False)[0].to(device)


class FlowFilter:
    """The filter of the module docstring; :meth:`reset` starts again (at a scene cut)."""

    def __init__(self, process_noise: float = 0.003, noise_sigmas: float = 3.0, still_sigmas: float = 0.5,
                 picture_gate: float = 4.0, sample_pixels: int = 65536, backend: str = "auto",
                 flow_edge: int = FLOW_EDGE):
        for name, value, low in (("process_noise", process_noise, 0.0), ("noise_sigmas", noise_sigmas, 0.0),
                                 ("still_sigmas", still_sigmas, 0.0), ("picture_gate", picture_gate, 1.0)):
            if not low < value <= 100.0 and not (name == "picture_gate" and value == 1.0):
                raise ValueError(f"`{name}` must be in ({low}, 100], got {value}")
        self.process_noise, self.noise_sigmas, self.still_sigmas = process_noise, noise_sigmas, still_sigmas
        self.picture_gate, self.sample_pixels, self.flow_edge = picture_gate, sample_pixels, flow_edge
        self.backend = resolve_backend(backend)
        self.reset()

    def reset(self) -> None:
        self.estimate = self.count = self.grey = None  # [H,W], [H,W], [h,w] uint8

    def update(self, depth: torch.Tensor, frame) -> torch.Tensor:
        """The filtered depth ``[H,W]`` (float32, the depth's device) of one frame and its picture (``[C,H,W]``
        float in [0,1] or ``[H,W,C]`` uint8, any size: the flow is scaled to the depth's)."""
        depth = depth.float()
        grey = prepare(frame_rgb(frame), self.flow_edge)
        previous, self.grey = self.grey, grey
        if self.estimate is None or previous is None or previous.shape != grey.shape:
            self.estimate, self.count = depth.clone(), torch.ones_like(depth)
            return depth.clone()
        if self.estimate.shape != depth.shape:
            raise ValueError(f"frame is {tuple(depth.shape)}, but earlier frames were "
                             f"{tuple(self.estimate.shape)}: a video's frames must share one size")
        size = tuple(depth.shape)
        backward, forward = (resize_flow(f, size).to(depth.device) for f in pair_flows(previous, grey, self.backend))
        tracked = consistent(backward, forward)  # [H,W], step 1
        (along, along_count), _ = warp(torch.stack([self.estimate, self.count]), backward)  # [H,W] each
        along_count = torch.where(tracked, along_count, torch.zeros_like(along_count))
        sigma = _quiet_sigma((depth - along) / torch.sqrt(1.0 + 1.0 / along_count.clamp(min=1e-6)), tracked,
                             self.sample_pixels)
        # step 2: keep the same pixel's history unless the tracked one predicts this frame clearly better
        better = box_mean((depth - self.estimate).square(), WINDOW) - box_mean((depth - along).square(), WINDOW)
        stay = torch.exp(-better.clamp(min=0.0) / (self.still_sigmas * sigma ** 2))
        stay = torch.where(tracked, stay, torch.ones_like(stay))
        history = along + stay * (self.estimate - along)
        count = along_count + stay * (self.count - along_count)
        count = count / (1.0 + self.process_noise * count)  # step 3
        change = depth - history
        scaled = change / torch.sqrt(1.0 + 1.0 / count.clamp(min=1e-6))
        count = count * torch.exp(-0.5 * (scaled / self._gate(previous, grey, backward, tracked, sigma)).square())
        self.estimate = depth + change.mul_(-1.0).mul_(count / (count + 1.0))  # step 5
        self.count = count + 1.0
        return self.estimate.clone()

    def _gate(self, previous, grey, backward, tracked, sigma: float) -> torch.Tensor:
        """Step 4's gate width ``[H,W]``: ``noise_sigmas * sigma``, ``picture_gate`` times that where the picture
        holds still along the flow."""
        gate = torch.full(tracked.shape, self.noise_sigmas * sigma, device=backward.device)
        if self.picture_gate == 1.0:
            return gate
        before, _ = warp(_upsample(previous, tracked.shape, backward.device), backward)  # [1,H,W]
        now = _upsample(grey, tracked.shape, backward.device)[0]
        residual = box_mean((before[0] - now).abs(), 3)
        level = _quiet_sigma(residual, tracked, self.sample_pixels)
        still = torch.exp(-0.5 * (residual / (3.0 * level)).square()) * tracked
        return gate * (1.0 + (self.picture_gate - 1.0) * still)
