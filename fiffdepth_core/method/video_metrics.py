"""Video depth metrics: one alignment per clip, temporal change at static points, AbsRel over the clip.

Numpy in, floats out. Clips are ``[T,H,W]`` arrays (T frames); ``valid`` is a boolean mask of the same shape, and a
pixel counts only where it is set and the ground truth is finite and > 0.

* :func:`align_clip`: ONE least-squares scale and shift for the whole clip (prediction -> GT depth). Per-frame
  alignment would hide exactly the flicker being measured; one fit per clip keeps it.
* :func:`temporal_change`: the mean absolute change of the aligned prediction between consecutive frames, at
  *static points*: pixels whose true depth changes by at most ``static_tolerance`` (relative) from one frame to the
  next. Divided by the true depth, so it is relative like AbsRel. A perfect prediction scores the ground truth's own
  change there (:func:`temporal_change` of the GT itself), never more than ``static_tolerance``.
* :func:`clip_abs_rel`: mean ``|aligned - gt| / gt`` over every counted pixel of the clip.
"""

from __future__ import annotations

import numpy as np


def _counted(gt: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    mask = np.isfinite(gt) & (gt > 0)
    return mask if valid is None else mask & valid.astype(bool)


def _check(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"prediction and ground truth must both be clips [T,H,W] of one shape, got {pred.shape} "
                         f"and {gt.shape}")


def align_clip(pred, gt, valid=None) -> np.ndarray:
    """``scale * pred + shift`` with one least-squares fit over every counted pixel of the clip."""
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    _check(pred, gt)
    mask = _counted(gt, valid)
    if mask.sum() < 2:
        raise ValueError("the clip has fewer than two counted pixels to align")
    x, y = pred[mask], gt[mask]
    design = np.stack([x, np.ones_like(x)], axis=1)  # [N,2]
    (scale, shift), *_ = np.linalg.lstsq(design, y, rcond=None)
    return scale * pred + shift


def temporal_change(pred, gt, valid=None, static_tolerance: float = 0.01) -> float:
    """Mean ``|pred[k+1] - pred[k]| / gt[k]`` over static points of consecutive frames (see module docstring)."""
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    _check(pred, gt)
    mask = _counted(gt, valid)
    both = mask[1:] & mask[:-1]  # [T-1,H,W]
    with np.errstate(invalid="ignore"):  # inf - inf (sky) where the GT itself is scored; never counted
        static = both & (np.abs(gt[1:] - gt[:-1]) <= static_tolerance * gt[:-1])
        change = np.abs(pred[1:] - pred[:-1])
    if not static.any():
        raise ValueError("no static points: the ground truth changes everywhere between consecutive frames")
    return float((change[static] / gt[:-1][static]).mean())


def clip_abs_rel(pred, gt, valid=None) -> float:
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    _check(pred, gt)
    mask = _counted(gt, valid)
    return float((np.abs(pred[mask] - gt[mask]) / gt[mask]).mean())


def clip_scores(pred, gt, valid=None, static_tolerance: float = 0.01) -> dict[str, float]:
    """``temporal_change`` and ``abs_rel`` of ``pred`` after one alignment over the clip."""
    aligned = align_clip(pred, gt, valid)
    return {"temporal_change": temporal_change(aligned, gt, valid, static_tolerance),
            "abs_rel": clip_abs_rel(aligned, gt, valid)}
