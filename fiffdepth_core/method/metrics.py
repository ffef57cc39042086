"""Zero-shot depth metrics: Marigold's protocol (FiffDepth Table 1) and Depth Pro's boundary scores (Table 2).

Numpy in, floats out; every function is pure. Images are ``[H,W]`` arrays (the depth metrics also take flat
arrays of pixels); ``valid`` is a boolean mask of the same shape.

* Masking lives in one helper, :func:`valid_pixels`: a pixel counts when ``valid`` says so **and** its GT is
  finite and > 0 (NaN/inf GT is masked, never an error). A prediction holding NaN/inf on a counted pixel is an
  error. A prediction and GT of different shapes raise a ValueError naming both shapes.
* Depth metrics (Marigold ``src/util/metric.py``): per image over the counted pixels, then averaged over images
  (:func:`mean_metrics`). An image with no counted pixel is skipped and counted, never divided by zero.
* Alignment (Marigold ``src/util/alignment.py`` and ``script/depth/eval.py``): least-squares scale and shift
  in depth space, or in disparity space (fit to 1/GT, clip disparity >= 1e-3, invert); then clip to the
  dataset's [min, max] and to >= 1e-6 (:func:`evaluate_depth`).
* Boundary scores (Depth Pro ``src/depth_pro/eval/boundary_metrics.py``): on inverse depth, 4 neighbour
  directions, thresholds linspace(1.05, 1.25, 10) weighted in proportion to the threshold. A direction with no
  edges contributes 0 to the direction average (as in Depth Pro), so F1 = 1 needs edges in all 4 directions.
"""

from __future__ import annotations

import math

import numpy as np

DEPTH_METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "delta1", "delta2", "delta3", "i_rmse", "silog")
ALIGNMENTS = ("least_square", "least_square_disparity", "none")
BOUNDARY_THRESHOLDS = np.linspace(1.05, 1.25, 10)
BOUNDARY_WEIGHTS = BOUNDARY_THRESHOLDS / BOUNDARY_THRESHOLDS.sum()
MIN_DISPARITY = 1e-3  # Marigold clips aligned disparity here before inverting
MIN_EVAL_DEPTH = 1e-6  # Marigold clips aligned depth here after the dataset range


class EmptyMaskError(ValueError):
    """No pixel is left to fit or score."""


# ----------------------------------------------------------------------------------------------- masking

def check_same_shape(pred: np.ndarray, gt: np.ndarray, names: tuple[str, str] = ("prediction", "ground truth"),
                     image: bool = False) -> None:
    """Raise a ValueError naming both shapes unless ``pred`` and ``gt`` have the same shape ([H,W] if ``image``)."""
    if np.shape(pred) != np.shape(gt) or np.ndim(pred) == 0 or (image and np.ndim(pred) != 2):
        kind = "[H,W] arrays" if image else "arrays"
        raise ValueError(f"the {names[0]} and the {names[1]} must be {kind} of the same shape, got "
                         f"{names[0]} {tuple(np.shape(pred))} and {names[1]} {tuple(np.shape(gt))}")


def valid_pixels(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """The pixels that count: ``valid`` (all if None) AND finite GT AND GT > 0. Checks shapes and the prediction."""
    check_same_shape(pred, gt)
    gt = np.asarray(gt)
    with np.errstate(invalid="ignore"):
        mask = np.isfinite(gt) & (gt > 0)
    if valid is not None:
        check_same_shape(valid, gt, ("valid mask", "ground truth"))
        mask &= np.asarray(valid, dtype=bool)
    bad = int(np.count_nonzero(~np.isfinite(np.asarray(pred)[mask])))
    if bad:
        raise ValueError(f"the prediction holds NaN/inf at {bad} valid pixels")
    return mask


def _pairs(pred, gt, valid) -> tuple[np.ndarray, np.ndarray]:
    mask = valid_pixels(pred, gt, valid)
    return np.asarray(pred, dtype=np.float64)[mask], np.asarray(gt, dtype=np.float64)[mask]


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan


# ----------------------------------------------------------------------------------------- depth metrics

def abs_rel(pred, gt, valid=None) -> float:
    """Mean of |p - g| / g (NaN on an empty mask)."""
    p, g = _pairs(pred, gt, valid)
    return _mean(np.abs(p - g) / g)


def sq_rel(pred, gt, valid=None) -> float:
    """Mean of (p - g)^2 / g."""
    p, g = _pairs(pred, gt, valid)
    return _mean((p - g) ** 2 / g)


def rmse(pred, gt, valid=None) -> float:
    """Square root of the mean of (p - g)^2."""
    p, g = _pairs(pred, gt, valid)
    return math.sqrt(_mean((p - g) ** 2)) if p.size else math.nan


def rmse_log(pred, gt, valid=None) -> float:
    """Square root of the mean of (ln p - ln g)^2 (p must be > 0: clip first, as :func:`evaluate_depth` does)."""
    p, g = _pairs(pred, gt, valid)
    return math.sqrt(_mean((np.log(p) - np.log(g)) ** 2)) if p.size else math.nan


def log10(pred, gt, valid=None) -> float:
    """Mean of |log10 p - log10 g|."""
    p, g = _pairs(pred, gt, valid)
    return _mean(np.abs(np.log10(p) - np.log10(g)))


def delta_accuracy(pred, gt, valid=None, threshold: float = 1.25) -> float:
    """Share of pixels with max(p/g, g/p) < ``threshold``."""
    p, g = _pairs(pred, gt, valid)
    return _mean((np.maximum(p / g, g / p) < threshold).astype(np.float64))


def delta1(pred, gt, valid=None) -> float:
    return delta_accuracy(pred, gt, valid, 1.25)


def delta2(pred, gt, valid=None) -> float:
    return delta_accuracy(pred, gt, valid, 1.25 ** 2)


def delta3(pred, gt, valid=None) -> float:
    return delta_accuracy(pred, gt, valid, 1.25 ** 3)


def i_rmse(pred, gt, valid=None) -> float:
    """Square root of the mean of (1/p - 1/g)^2."""
    p, g = _pairs(pred, gt, valid)
    return math.sqrt(_mean((1.0 / p - 1.0 / g) ** 2)) if p.size else math.nan


def silog(pred, gt, valid=None) -> float:
    """Scale-invariant log error x 100: sqrt(mean(d^2) - mean(d)^2) x 100 with d = ln p - ln g."""
    p, g = _pairs(pred, gt, valid)
    if not p.size:
        return math.nan
    d = np.log(p) - np.log(g)
    return math.sqrt(max(float(np.mean(d ** 2) - np.mean(d) ** 2), 0.0)) * 100.0


METRIC_FUNCTIONS = {"abs_rel": abs_rel, "sq_rel": sq_rel, "rmse": rmse, "rmse_log": rmse_log, "log10": log10,
                    "delta1": delta1, "delta2": delta2, "delta3": delta3, "i_rmse": i_rmse, "silog": silog}


# --------------------------------------------------------------------------------------------- alignment

def alignment_columns(width: int, height: int, max_resolution: int | None) -> np.ndarray | None:
    """Column indices Marigold's ``alignment_max_res`` keeps, or None when it keeps everything.

    Marigold passes a ``[1,H,W]`` tensor to ``torch.nn.Upsample(scale_factor=s, mode="nearest")`` with
    s = min(max_res / H, max_res / W); a 3-D tensor is resampled along its last axis only, so only the columns
    are subsampled (W -> floor(W*s), source column floor(j / s)). Reproduced as is, to match its numbers.
    """
    if max_resolution is None:
        return None
    scale = min(max_resolution / height, max_resolution / width)
    if scale >= 1:
        return None
    out = int(math.floor(width * scale))
    inv = np.float32(1.0 / scale)
    return np.minimum(np.floor(np.arange(out, dtype=np.float32) * inv).astype(np.int64), width - 1)


def _fit(pred, target, mask, max_resolution) -> tuple[float, float]:
    """Least-squares (scale, shift) with scale * pred + shift ~ target over ``mask``."""
    pred = np.asarray(pred, dtype=np.float64)
    if max_resolution is not None:
        check_same_shape(pred, target, image=True)
        cols = alignment_columns(pred.shape[1], pred.shape[0], max_resolution)
        if cols is not None:
            pred, target, mask = pred[:, cols], target[:, cols], mask[:, cols]
    p = pred[mask]
    if p.size == 0:
        raise EmptyMaskError("no valid pixel to fit the alignment on")
    design = np.stack([p, np.ones_like(p)], axis=1)  # [N,2]
    (scale, shift), *_ = np.linalg.lstsq(design, np.asarray(target, dtype=np.float64)[mask], rcond=None)
    return float(scale), float(shift)


def align_least_squares(pred, gt, valid=None, max_resolution: int | None = None):
    """Scale and shift ``pred`` to ``gt`` by least squares in depth space over the valid pixels.

    Returns ``(aligned [H,W] float64, (scale, shift))``. Raises :class:`EmptyMaskError` on an empty mask.
    """
    mask = valid_pixels(pred, gt, valid)
    scale, shift = _fit(pred, gt, mask, max_resolution)
    return np.asarray(pred, dtype=np.float64) * scale + shift, (scale, shift)


def align_least_squares_disparity(pred, gt, valid=None, max_resolution: int | None = None):
    """For disparity predictions: fit ``pred`` to 1/GT, clip the disparity to >= 1e-3, invert to depth.

    Pixels with a prediction <= 0 are left out of the fit (as Marigold does). Returns depth and (scale, shift).
    """
    mask = valid_pixels(pred, gt, valid) & (np.asarray(pred) > 0)
    target = np.zeros(np.shape(gt), dtype=np.float64)
    target[mask] = 1.0 / np.asarray(gt, dtype=np.float64)[mask]
    scale, shift = _fit(pred, target, mask, max_resolution)
    disparity = np.clip(np.asarray(pred, dtype=np.float64) * scale + shift, MIN_DISPARITY, None)
    return 1.0 / disparity, (scale, shift)


def align(pred, gt, valid=None, alignment: str = "least_square", max_resolution: int | None = None):
    """Dispatch on ``alignment`` (one of :data:`ALIGNMENTS`); ``none`` returns ``pred`` and (1, 0)."""
    if alignment == "least_square":
        return align_least_squares(pred, gt, valid, max_resolution)
    if alignment == "least_square_disparity":
        return align_least_squares_disparity(pred, gt, valid, max_resolution)
    if alignment == "none":
        valid_pixels(pred, gt, valid)
        return np.asarray(pred, dtype=np.float64), (1.0, 0.0)
    raise ValueError(f"`alignment` must be one of {ALIGNMENTS}, got {alignment!r}")


def evaluate_depth(pred, gt, valid=None, min_depth: float = 0.0, max_depth: float = math.inf,
                   alignment: str = "least_square", max_resolution: int | None = None) -> dict | None:
    """Marigold's per-image evaluation: align, clip to [min_depth, max_depth] then >= 1e-6, every metric.

    Returns ``{metric: value, "scale", "shift", "valid_pixels"}``, or None when no pixel is valid.
    """
    mask = valid_pixels(pred, gt, valid)
    count = int(np.count_nonzero(mask))
    if count == 0:
        return None
    aligned, (scale, shift) = align(pred, gt, mask, alignment, max_resolution)
    clipped = np.clip(np.clip(aligned, min_depth, max_depth), MIN_EVAL_DEPTH, None)
    p, g = clipped[mask], np.asarray(gt, dtype=np.float64)[mask]  # [N]: mask once, score the pairs
    result = {name: fn(p, g) for name, fn in METRIC_FUNCTIONS.items()}
    result.update(scale=scale, shift=shift, valid_pixels=count)
    return result


def mean_metrics(per_image: list[dict | None], keys: tuple[str, ...] | None = None) -> dict:
    """Mean of each metric over the evaluated images; None entries (empty masks) are skipped and counted.

    Returns ``{metric: mean, "images": evaluated, "skipped_empty": skipped}`` (means are NaN with no image).
    """
    rows = [r for r in per_image if r is not None]
    if keys is None:
        keys = tuple(k for k in (rows[0] if rows else DEPTH_METRICS) if k not in ("scale", "shift", "valid_pixels"))
    out = {k: (float(np.mean([r[k] for r in rows])) if rows else math.nan) for k in keys}
    out.update(images=len(rows), skipped_empty=len(per_image) - len(rows))
    return out


# ------------------------------------------------------------------------------------ boundary (Depth Pro)

def inverse_depth(depth, eps: float = 1e-6) -> np.ndarray:
    """1 / max(depth, eps), in float64."""
    return 1.0 / np.clip(np.asarray(depth, dtype=np.float64), eps, None)


def _ratios(x: np.ndarray) -> tuple[np.ndarray, ...]:
    """Neighbour ratios for the 4 directions (left, top, right, bottom), Depth Pro's order and orientation."""
    return x[:, :-1] / x[:, 1:], x[:-1, :] / x[1:, :], x[:, 1:] / x[:, :-1], x[1:, :] / x[:-1, :]


def _pair_valid(valid: np.ndarray | None) -> tuple:
    if valid is None:
        return (True,) * 4
    horizontal, vertical = valid[:, :-1] & valid[:, 1:], valid[:-1, :] & valid[1:, :]
    return horizontal, vertical, horizontal, vertical


def _nms_rows(ratio: np.ndarray, threshold: float) -> np.ndarray:
    """Keep, in each horizontal run of ``ratio > threshold``, only its largest value (the first on ties)."""
    out = np.zeros(ratio.shape, dtype=bool)
    rows, cols = np.nonzero(ratio > threshold)
    if rows.size == 0:
        return out
    starts = np.ones(rows.size, dtype=bool)
    starts[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1] + 1)
    run = np.cumsum(starts) - 1
    order = np.lexsort((np.arange(rows.size), -ratio[rows, cols], run))  # by run, then value desc, then index
    first = order[np.r_[True, run[order][1:] != run[order][:-1]]]
    out[rows[first], cols[first]] = True
    return out


def _direction_average(pred_edges, gt_edges, denominator: str) -> float:
    total = 0.0
    for p, g in zip(pred_edges, gt_edges):
        hits = np.count_nonzero(p & g)
        total += hits / max(np.count_nonzero(p if denominator == "pred" else g), 1)
    return 0.25 * total


def boundary_scores(pred, gt, threshold: float, valid=None) -> tuple[float, float, float]:
    """(precision, recall, F1) of depth edges at one ratio ``threshold`` on inverse depth.

    ``valid`` (optional, not in Depth Pro) drops neighbour pairs with an invalid pixel from both edge maps.
    """
    check_same_shape(pred, gt, image=True)
    keep = _pair_valid(None if valid is None else np.asarray(valid, dtype=bool))
    pred_edges = [(r > threshold) & k for r, k in zip(_ratios(inverse_depth(pred)), keep)]
    gt_edges = [(r > threshold) & k for r, k in zip(_ratios(inverse_depth(gt)), keep)]
    precision = _direction_average(pred_edges, gt_edges, "pred")
    recall = _direction_average(pred_edges, gt_edges, "gt")
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return precision, recall, f1


def boundary_f1(pred, gt, valid=None) -> float:
    """Depth Pro's scale-invariant boundary F1 for depth GT (Sintel, Spring, iBims-1): weighted over thresholds."""
    scores = [boundary_scores(pred, gt, float(t), valid)[2] for t in BOUNDARY_THRESHOLDS]
    return float(np.sum(np.asarray(scores) * BOUNDARY_WEIGHTS))


def mask_edges(mask: np.ndarray) -> tuple[np.ndarray, ...]:
    """Edges of a binary foreground mask in the 4 directions: the foreground side of each fg/bg pair."""
    m = np.asarray(mask, dtype=bool)
    return m[:, :-1] & ~m[:, 1:], m[:-1, :] & ~m[1:, :], m[:, 1:] & ~m[:, :-1], m[1:, :] & ~m[:-1, :]


def thinned_edges(pred, threshold: float) -> tuple[np.ndarray, ...]:
    """Depth edges of ``pred`` on inverse depth, thinned by non-maximum suppression along each direction."""
    left, top, right, bottom = _ratios(inverse_depth(pred))
    return (_nms_rows(left, threshold), _nms_rows(top.T, threshold).T,
            _nms_rows(right, threshold), _nms_rows(bottom.T, threshold).T)


def boundary_recall(pred, mask, alpha_threshold: float = 0.1) -> float:
    """Depth Pro's scale-invariant boundary recall for mask GT (AM-2k, P3M-10k, DIS-5K): weighted over thresholds.

    GT edges come from ``mask > alpha_threshold``; predicted edges from :func:`thinned_edges`.
    """
    check_same_shape(pred, mask, ("prediction", "mask"), image=True)
    gt_edges = mask_edges(np.asarray(mask) > alpha_threshold)
    scores = [_direction_average(thinned_edges(pred, float(t)), gt_edges, "gt") for t in BOUNDARY_THRESHOLDS]
    return float(np.sum(np.asarray(scores) * BOUNDARY_WEIGHTS))
