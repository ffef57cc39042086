"""Temporal alignment of per-frame depth: video depth that does not flicker.

FiffDepth predicts *affine-invariant* depth: every frame comes with its own unknown scale and shift, so a sequence
of per-frame maps flickers even when the scene barely moves. Here each frame's raw depth ``d`` is mapped to
``scale * d + shift``, fitted to a running reference:

1. Robust least squares over pixels that agree. On a fixed grid of at most ``sample_pixels`` pixels, an L1 fit
   (iteratively reweighted least squares) gives a starting point that outliers (moving objects, disocclusions)
   cannot drag; then pixels whose residual exceeds ``inlier_sigmas`` robust standard deviations (1.4826 x the
   median absolute residual) are rejected and the fit is redone on the rest, twice. On noiseless data the result
   is exact.
2. Scene cuts. Given the pictures, a cut is where the picture changes (:mod:`.shots`: robust to exposure and
   small motion), and the reference restarts there. A frame whose depth disagrees with the reference (fewer than
   ``min_agreement`` of the pixels within ``agreement`` of its depth range, or an implausible scale) while the
   picture goes on is the model being unsteady: it is aligned by matching its 2-98 % range and median to the
   reference's (:func:`range_fit`; a least-squares fit to depth it barely correlates with would flatten it).
   Without the pictures, such a frame starts a new shot, as the only sign of a cut the depth gives.
3. The reference follows the camera: after each frame, ``reference = (1 - decay) * reference + decay * aligned``,
   then widened about its middle back towards the 2-98 % range it had before: by at most 2 % after a frame that
   agrees, fully after an unsteady one. Averaging maps that do not quite agree narrows the range, and a
   least-squares fit of a noisy frame is slightly too flat; left alone, both compound frame after frame until a
   long shot's depth is flat. The 2 % limit leaves a real narrowing (a near object leaving) to show within a few
   frames. A shot whose frames agree only loosely (many pixels off by several percent) can still narrow slowly.

Alignment removes each frame's own scale and shift, but not the model's pixel-level jitter: a per-frame network
answers a slightly different question for every frame (new noise, exposure, compression), and part of that change
is not affine. ``stabilize`` adds a temporal filter after alignment. Given the pictures, it follows each point
along their optical flow (:class:`~.temporal_flow.FlowFilter`); without them, it works per pixel, with one map of
history:

4. ``out = current + w * (history - current)``, ``history`` = the previous output, and
   ``w = history_weight * exp(-0.5 * (change / (noise_sigmas * sigma))**2)``, where ``change = current - history`` and
   ``sigma`` is the frame's noise level, measured on its quietest pixels (3.1388 x the first quartile of the
   absolute change: the standard deviation if the change were noise alone). Motion raises that estimate only
   mildly while at least a quarter of the frame is still (x2.7 with 60 % of it moving), where a median would be
   taken over by the motion. Changes at the noise level are averaged over a few frames; changes several times larger
   (something moved, a disocclusion) pass at once, so the filter does not smear motion. A scene cut restarts the
   history with the alignment's reference.

The first frame of each shot keeps its raw depth (scale 1, shift 0), so aligned depth is expressed in the units
of that frame: 0 = its nearest point, 1 = its farthest. Frames that later see nearer or farther things may leave
[0, 1] slightly; :func:`align_sequence` (``normalize=True``) therefore applies one last affine map to the whole
clip so that it spans exactly [0, 1] again without changing any frame relative to another.

:class:`TemporalAligner` streams (one frame at a time, constant memory: one reference map);
:func:`align_sequence` aligns a whole ``[T,H,W]`` batch. Both work on any torch device.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .denoise import steady_frames
from .flow import BACKENDS
from .shots import ShotDetector
from .temporal_flow import FlowFilter

CHUNK_BYTES = 1 << 30  # steadied frames predicted per call by predict_aligned (1 GB: 43 frames of 1080p)

log = logging.getLogger(__name__)

MAX_WIDENING = 0.02  # step 3: at most this much per steady frame, so a real narrowing (an object leaving) stays
TEMPORAL_MODES = ("off", "align", "stabilize")
MAD_TO_SIGMA = 1.4826  # median absolute deviation -> standard deviation of a normal distribution
Q25_TO_SIGMA = 3.1388  # first quartile of |x| -> standard deviation of a normal distribution (1 / 0.31863)


@dataclass(frozen=True)
class AlignConfig:
    """How frames are aligned; the defaults suit 24-60 fps footage."""

    decay: float = 0.5  # weight of the newest aligned frame in the running reference (1 = previous frame only)
    inlier_sigmas: float = 3.0  # residuals beyond this many robust standard deviations are outliers
    agreement: float = 0.1  # a pixel agrees with the reference within this fraction of the reference's depth range
    min_agreement: float = 0.75  # fewer agreeing pixels than this fraction -> scene cut
    max_scale_ratio: float = 4.0  # a fitted scale outside [1/r, r] -> scene cut
    sample_pixels: int = 65536  # pixels on a fixed grid used for the fit (all pixels when the frame is smaller)
    l1_iterations: int = 8
    history_weight: float = 0.8  # stabilize: the history's weight where a pixel changes by noise alone (0 = off)
    noise_sigmas: float = 3.0  # stabilize: changes around this many noise levels fade out of the average
    cut_threshold: float = 0.15  # with frames: picture change (mean rank difference) above which a shot may end
    cut_ratio: float = 2.0  # with frames: ... and above this many times the recent frames' median change
    process_noise: float = 0.003  # stabilize with frames: how fast the flow-guided history is forgotten
    still_sigmas: float = 0.5  # stabilize with frames: margin (noise levels²) that keeps the same pixel's history
    picture_gate: float = 4.0  # stabilize with frames: the gate is this much wider where the picture holds still
    flow_backend: str = "auto"  # stabilize with frames: opencv (DIS) when importable, else torch

    def __post_init__(self):
        checks = (("decay", self.decay, 0.0, 1.0, False), ("agreement", self.agreement, 0.0, 1.0, False),
                  ("min_agreement", self.min_agreement, 0.0, 1.0, True),
                  ("inlier_sigmas", self.inlier_sigmas, 0.0, 100.0, False),
                  ("history_weight", self.history_weight, 0.0, 0.99, True),
                  ("noise_sigmas", self.noise_sigmas, 0.0, 100.0, False),
                  ("cut_threshold", self.cut_threshold, 0.0, 1.0, False),
                  ("process_noise", self.process_noise, 0.0, 100.0, False),
                  ("still_sigmas", self.still_sigmas, 0.0, 100.0, False),
                  ("picture_gate", self.picture_gate, 1.0, 100.0, True))
        for name, value, low, high, low_ok in checks:
            if not (low <= value <= high) or (value == low and not low_ok):
                bound = "[" if low_ok else "("
                raise ValueError(f"`{name}` must be in {bound}{low}, {high}], got {value}")
        if not self.cut_ratio >= 1.0:
            raise ValueError(f"`cut_ratio` must be >= 1, got {self.cut_ratio}")
        if self.flow_backend not in BACKENDS:  # the name only: whether OpenCV imports is asked when a filter is made
            raise ValueError(f"`flow_backend` must be one of {', '.join(BACKENDS)}, got {self.flow_backend!r}")
        if not self.max_scale_ratio > 1.0:
            raise ValueError(f"`max_scale_ratio` must be > 1, got {self.max_scale_ratio}")
        for name in ("sample_pixels", "l1_iterations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class AlignStep:
    """What happened to one frame: ``aligned = scale * raw + shift``."""

    scale: float
    shift: float
    cut: bool  # this frame started a new shot (the first frame always does)
    agreement: float  # fraction of sampled pixels agreeing with the reference (1.0 for a shot's first frame)
    unsteady: bool = False  # the depth disagreed with the reference but the picture went on: fitted by range


def _grid(height: int, width: int, budget: int) -> tuple[slice, slice]:
    """A strided sub-grid with at most about ``budget`` pixels."""
    stride = 1
    while ((height + stride - 1) // stride) * ((width + stride - 1) // stride) > budget:
        stride += 1
    return slice(None, None, stride), slice(None, None, stride)


def _weighted_fit(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Weighted least squares ``y ~ s * x + t`` (float64); a flat ``x`` gives ``s = 1`` and a matched mean."""
    sw = w.sum()
    if not sw > 0:
        return 1.0, 0.0
    mx, my = np.dot(w, x) / sw, np.dot(w, y) / sw
    dx = x - mx
    var = np.dot(w, dx * dx)
    if not var > 1e-18 * sw:
        return 1.0, float(my - mx)
    scale = np.dot(w, dx * (y - my)) / var
    return float(scale), float(my - scale * mx)


def robust_affine(x, y, inlier_sigmas: float = 3.0, l1_iterations: int = 8,
                  floor: float = 1e-6) -> tuple[float, float, np.ndarray]:
    """``(scale, shift, inliers)`` of ``y ~ scale * x + shift`` for flat arrays, robust to outliers in ``y``.

    An L1 fit by iteratively reweighted least squares starts it; then two rounds of least squares on the pixels
    within ``inlier_sigmas`` robust standard deviations (at least ``floor``) of the current fit. Runs in numpy on
    the CPU: the sample is small, and tiny tensor ops pay more in threading overhead than they compute.
    """
    x, y = _flat64(x), _flat64(y)
    w = np.ones_like(x)
    scale, shift = _weighted_fit(x, y, w)
    for _ in range(l1_iterations):  # IRLS for least absolute deviations
        w = 1.0 / np.maximum(np.abs(scale * x + shift - y), floor)
        scale, shift = _weighted_fit(x, y, w)
    inliers = np.ones(x.shape, dtype=bool)
    for _ in range(2):
        residual = np.abs(scale * x + shift - y)
        sigma = MAD_TO_SIGMA * np.median(residual)
        inliers = residual <= max(float(inlier_sigmas * sigma), floor)
        if int(inliers.sum()) < 2:
            break
        scale, shift = _weighted_fit(x[inliers], y[inliers], np.ones(int(inliers.sum())))
    return scale, shift, inliers


def _flat64(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1)


class TemporalFilter:
    """Step 4 of the module docstring: per-pixel averaging over time of changes at the noise level, while larger
    changes pass at once. Holds one map, the previous output; :meth:`reset` starts again (at a scene cut)."""

    def __init__(self, history_weight: float = 0.8, noise_sigmas: float = 3.0, sample_pixels: int = 65536):
        AlignConfig(history_weight=history_weight, noise_sigmas=noise_sigmas, sample_pixels=sample_pixels)  # checks
        self.history_weight, self.noise_sigmas, self.sample_pixels = history_weight, noise_sigmas, sample_pixels
        self.history: torch.Tensor | None = None  # [H,W] float32

    def reset(self) -> None:
        self.history = None

    def update(self, frame: torch.Tensor) -> torch.Tensor:
        """The filtered frame ``[H,W]`` (float32, same device); the first frame after a reset passes unchanged."""
        frame = frame.float()
        if self.history is None:
            self.history = frame.clone()
            return frame.clone()
        if self.history.shape != frame.shape:
            raise ValueError(f"frame is {tuple(frame.shape)}, but earlier frames were {tuple(self.history.shape)}: "
                             "a video's frames must share one size")
        change = frame - self.history  # [H,W]
        rows, cols = _grid(*frame.shape, self.sample_pixels)
        quiet = float(np.quantile(np.abs(_flat64(change[rows, cols])), 0.25))  # the quietest quarter: noise alone
        sigma = max(Q25_TO_SIGMA * quiet, 1e-12)
        weight = torch.exp(change.square() * (-0.5 / (self.noise_sigmas * sigma) ** 2)).mul_(self.history_weight)
        self.history = frame - change.mul_(weight)  # current + w * (history - current)
        return self.history.clone()


class TemporalAligner:
    """Aligns frames one at a time to a running reference; holds one reference map, whatever the clip length.

    Given the pictures too (``update(depth, frame)``), scene cuts come from them (:class:`~.shots.ShotDetector`):
    a frame whose depth disagrees with the reference while the picture goes on is the model being unsteady, not a
    new shot. It is aligned anyway, by matching its robust range (2-98 % quantiles) and median to the reference's,
    because a least-squares fit to depth it barely correlates with would shrink it towards a constant, frame after
    frame; and the reference keeps its range through such frames. With ``stabilize`` the aligned frames also pass
    a temporal filter: :class:`~.temporal_flow.FlowFilter` along the optical flow when the pictures are given,
    else :class:`TemporalFilter`. Either way the filter holds one or two more maps.
    """

    def __init__(self, config: AlignConfig = AlignConfig(), stabilize: bool = False):
        self.config = config
        self.stabilize = stabilize
        self.reference: torch.Tensor | None = None  # [H,W] float32, in the current shot's units
        self.filter: TemporalFilter | FlowFilter | None = None
        self.shots: ShotDetector | None = None
        self.frames = 0
        self.cuts = 0  # scene cuts after the first frame
        self.unsteady = 0  # frames aligned by range because the depth disagreed while the picture went on

    def reset(self) -> None:
        """Forget the reference (and the history): the next frame starts a new shot."""
        self.reference = None
        if self.filter is not None:
            self.filter.reset()

    def _pictures(self, frame) -> bool | None:
        """Whether the picture cuts here (None without pictures); every frame of a clip has one, or none does."""
        if (frame is None) != (self.shots is None) and self.frames > 1:
            raise ValueError(f"frame {self.frames}: pictures must be given with every frame of a clip or with none")
        if frame is None:
            if self.stabilize and self.filter is None:
                self.filter = TemporalFilter(self.config.history_weight, self.config.noise_sigmas,
                                             self.config.sample_pixels)
            return None
        if self.shots is None:
            self.shots = ShotDetector(self.config.cut_threshold, self.config.cut_ratio)
            if self.stabilize:
                cfg = self.config
                self.filter = FlowFilter(cfg.process_noise, cfg.noise_sigmas, cfg.still_sigmas, cfg.picture_gate,
                                         cfg.sample_pixels, cfg.flow_backend)
        return self.shots.update(frame)

    def update(self, depth: torch.Tensor, frame=None) -> tuple[torch.Tensor, AlignStep]:
        """Align one raw depth map ``[H,W]``: the aligned map (float32, same device) and an :class:`AlignStep`.

        ``frame``: the picture the depth was made from (``[C,H,W]`` float in [0,1] or ``[H,W,C]`` uint8, any size),
        for cuts from the pictures and the flow-guided filter."""
        if depth.ndim != 2:
            raise ValueError(f"`depth` must be one frame [H,W], got shape {tuple(depth.shape)}")
        depth = depth.float()
        self.frames += 1
        if self.reference is not None and self.reference.shape != depth.shape:
            raise ValueError(f"frame {self.frames} is {tuple(depth.shape)}, but earlier frames were "
                             f"{tuple(self.reference.shape)}: a video's frames must share one size")
        picture_cut = self._pictures(frame)
        if self.reference is None or picture_cut:
            if picture_cut and self.frames > 1:
                log.info("scene cut at frame %d (the picture changes: %.2f)", self.frames, self.shots.last_change)
            return self._restart(depth, frame)
        cfg = self.config
        rows, cols = _grid(*depth.shape, cfg.sample_pixels)
        x = _flat64(depth[rows, cols])  # [N], on the CPU
        y = _flat64(self.reference[rows, cols])  # [N]
        low, high = np.quantile(y, [0.02, 0.98])
        spread = max(float(high - low), 1e-6)
        scale, shift, _ = robust_affine(x, y, cfg.inlier_sigmas, cfg.l1_iterations, floor=1e-6 * spread)
        agree = float((np.abs(scale * x + shift - y) <= cfg.agreement * spread).mean())
        plausible = 1.0 / cfg.max_scale_ratio <= scale <= cfg.max_scale_ratio
        steady = agree >= cfg.min_agreement and plausible
        if not steady and picture_cut is None:
            log.info("scene cut at frame %d (%.0f%% of pixels agree, scale %.3g)", self.frames, 100 * agree, scale)
            return self._restart(depth, frame)
        if not steady:  # the picture goes on: an unsteady model, not a new shot
            self.unsteady += 1
            log.debug("frame %d: the depth disagrees with the reference (%.0f%% of pixels agree, scale %.3g) but the "
                      "picture goes on: aligned by range", self.frames, 100 * agree, scale)
            scale, shift = range_fit(x, y)
        aligned = depth * scale + shift  # [H,W]
        self._follow(aligned, float(high - low), limit=steady)
        step = AlignStep(scale, shift, cut=False, agreement=agree, unsteady=not steady)
        if self.filter is not None:
            aligned = self.filter.update(aligned) if frame is None else self.filter.update(aligned, frame)
        return aligned, step

    def _follow(self, aligned: torch.Tensor, former: float, limit: bool) -> None:
        """Step 3: the reference follows the aligned frame, then is widened back towards its ``former`` 2-98 %
        range about its own middle: by at most :data:`MAX_WIDENING` after a steady frame (``limit``), fully after
        an unsteady one."""
        self.reference.mul_(1.0 - self.config.decay).add_(aligned, alpha=self.config.decay)
        rows, cols = _grid(*self.reference.shape, self.config.sample_pixels)
        low, high = np.quantile(_flat64(self.reference[rows, cols]), [0.02, 0.98])
        if not high > low:
            return
        factor = former / (high - low)
        if limit:
            factor = min(max(factor, 1.0), 1.0 + MAX_WIDENING)
        if factor != 1.0:
            middle = 0.5 * (low + high)
            self.reference.sub_(middle).mul_(factor).add_(middle)

    def _restart(self, depth: torch.Tensor, frame=None) -> tuple[torch.Tensor, AlignStep]:
        self.cuts += int(self.frames > 1)
        self.reference = depth.clone()
        if self.filter is not None:
            self.filter.reset()
            self.filter.update(depth) if frame is None else self.filter.update(depth, frame)
        return depth.clone(), AlignStep(1.0, 0.0, cut=True, agreement=1.0)


def range_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(scale, shift)`` taking the 2-98 % range and the median of ``x`` onto those of ``y`` (flat arrays)."""
    x_low, x_mid, x_high = np.quantile(x, [0.02, 0.5, 0.98])
    y_low, y_mid, y_high = np.quantile(y, [0.02, 0.5, 0.98])
    scale = (y_high - y_low) / (x_high - x_low) if x_high > x_low else 1.0
    return float(scale), float(y_mid - scale * x_mid)


def unit_range(low: float, high: float) -> tuple[float, float]:
    """``(scale, shift)`` of the affine map taking ``[low, high]`` to ``[0, 1]`` (identity for a flat range)."""
    if not high > low:
        return 1.0, 0.0
    return 1.0 / (high - low), -low / (high - low)


def align_sequence(depths: torch.Tensor, config: AlignConfig = AlignConfig(), normalize: bool = True,
                   stabilize: bool = False, frames=None) -> tuple[torch.Tensor, list[AlignStep]]:
    """Align a clip of raw depth ``[T,H,W]`` frame by frame (see :class:`TemporalAligner`), and with ``stabilize``
    filter it over time too. ``frames``: the clip's pictures, ``[T,C,H,W]`` float in [0,1] (any size; ComfyUI's
    ``[T,H,W,C]`` IMAGE moved to channels first), for scene cuts from the pictures and the flow-guided filter.

    With ``normalize`` one affine map over the whole clip then takes the aligned depth's range to exactly [0, 1]
    (0 = the nearest point of the clip): frames keep their relation to each other, and the result is again depth in
    [0, 1] like the model's raw output. Returns ``(aligned [T,H,W] float32, steps)``.
    """
    if depths.ndim != 3 or depths.shape[0] == 0:
        raise ValueError(f"`depths` must be a clip [T,H,W] with T >= 1, got shape {tuple(depths.shape)}")
    if frames is not None and (frames.ndim != 4 or frames.shape[0] != depths.shape[0]):
        raise ValueError(f"`frames` must be the clip's pictures [T,C,H,W] with T = {depths.shape[0]}, got shape "
                         f"{tuple(frames.shape)}")
    aligner = TemporalAligner(config, stabilize)
    out = torch.empty(depths.shape, dtype=torch.float32, device=depths.device)
    steps = []
    for i, depth in enumerate(depths):
        out[i], step = aligner.update(depth, None if frames is None else frames[i])
        steps.append(step)
    return _finish(out, aligner, normalize), steps


def _finish(out: torch.Tensor, aligner: TemporalAligner, normalize: bool) -> torch.Tensor:
    """Log the unsteady frames; with ``normalize``, map the clip's aligned depth ``out`` (in place) to [0, 1]."""
    if aligner.unsteady:
        log.info("%d frame(s) whose depth disagreed with the clip's while the picture went on (an unsteady model); "
                 "aligned by range", aligner.unsteady)
    if normalize:
        low, high = (float(v) for v in torch.aminmax(out))
        if high > low:  # (x - low) / (high - low): exactly 0 and 1 at the ends, where scale * x + shift may miss by an ulp
            out.sub_(low).div_(high - low)
        out.clamp_(0.0, 1.0)  # only removes rounding error (a flat clip stays as it is)
    return out


def predict_aligned(predict: Callable[[torch.Tensor], torch.Tensor], frames: torch.Tensor, stabilize: bool = False,
                    batch_size: int = 1, config: AlignConfig = AlignConfig(),
                    chunk_bytes: int = CHUNK_BYTES) -> tuple[torch.Tensor, list[AlignStep]]:
    """``align`` (``stabilize``) for a clip held in memory, ``frames`` ``[T,C,H,W]`` float in [0, 1]: the frames
    steadied (:func:`.denoise.steady_frames`: exposure levelled, still areas denoised), predicted by ``predict``
    (``[B,C,H,W]`` -> raw depth ``[B,H,W]``) a chunk at a time, each frame aligned (and filtered) with its steadied
    picture, the clip normalised as :func:`align_sequence` does. A chunk is a multiple of ``batch_size`` frames of
    about ``chunk_bytes`` (at least one batch), so memory holds the clip, its depth and one chunk of steadied
    frames, never a second copy of the clip; each chunk is one ``predict`` call (a host that swaps models swaps
    them once per chunk). Returns ``(aligned [T,H,W] float32, steps)``."""
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise ValueError(f"`frames` must be a clip [T,C,H,W] with T >= 1, got shape {tuple(frames.shape)}")
    per_frame = frames[0].numel() * frames.element_size()
    batch_size = max(1, batch_size)
    chunk = max(1, chunk_bytes // max(1, per_frame * batch_size)) * batch_size
    aligner = TemporalAligner(config, stabilize)
    out, steps, pending = None, [], []
    for index, picture in enumerate(steady_frames(frames)):
        pending.append(picture)
        if len(pending) < chunk and index + 1 < len(frames):
            continue
        pictures, pending = torch.stack(pending), []  # [B,C,H,W]
        for depth, steadied in zip(predict(pictures), pictures):
            aligned, step = aligner.update(depth, steadied)
            if out is None:
                out = torch.empty((len(frames), *aligned.shape), dtype=torch.float32, device=aligned.device)
            out[len(steps)] = aligned
            steps.append(step)
    return _finish(out, aligner, True), steps
