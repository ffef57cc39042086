"""Depth metrics, alignment and Depth Pro's boundary scores against hand-computed cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from fiffdepth_core.method import metrics as M


def ramp(h=6, w=8, low=1.0, high=5.0):
    return np.linspace(low, high, h * w).reshape(h, w)


# ------------------------------------------------------------------------------------------- depth metrics

@pytest.mark.parametrize("alignment", ["none", "least_square", "least_square_disparity"])
def test_perfect_prediction(alignment):
    gt = ramp()
    pred = 1.0 / gt if alignment == "least_square_disparity" else gt.copy()
    result = M.evaluate_depth(pred, gt, None, 1e-3, 10.0, alignment)
    assert result["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert result["rmse"] == pytest.approx(0.0, abs=1e-12)
    assert result["delta1"] == result["delta2"] == result["delta3"] == 1.0
    assert result["valid_pixels"] == gt.size


def test_planted_scale_and_shift_are_recovered():
    gt = ramp()
    pred = (gt - 0.5) / 3.0  # gt = 3 * pred + 0.5
    aligned, (scale, shift) = M.align_least_squares(pred, gt)
    assert (scale, shift) == (pytest.approx(3.0), pytest.approx(0.5))
    np.testing.assert_allclose(aligned, gt, atol=1e-12)


def test_planted_disparity_scale_and_shift_are_recovered():
    gt = ramp()
    pred = 2.0 / gt + 0.1  # 1/gt = 0.5 * pred - 0.05
    depth, (scale, shift) = M.align_least_squares_disparity(pred, gt)
    assert (scale, shift) == (pytest.approx(0.5), pytest.approx(-0.05))
    np.testing.assert_allclose(depth, gt, rtol=1e-10)


def test_alignment_fits_only_valid_pixels():
    gt = ramp()
    pred = gt * 2.0
    pred[0, 0] = 1000.0  # an outlier outside the valid mask must not move the fit
    valid = np.ones_like(gt, dtype=bool)
    valid[0, 0] = False
    _, (scale, shift) = M.align_least_squares(pred, gt, valid)
    assert (scale, shift) == (pytest.approx(0.5), pytest.approx(0.0, abs=1e-10))


def test_known_outliers_hand_computed():
    gt = np.full((2, 5), 2.0)
    pred = gt.copy()
    pred[0, 0], pred[1, 4] = 4.0, 3.0  # relative errors 1.0 and 0.5; ratios 2.0 and 1.5 (both fail δ1)
    assert M.abs_rel(pred, gt) == pytest.approx(1.5 / 10)
    assert M.sq_rel(pred, gt) == pytest.approx((4.0 / 2 + 1.0 / 2) / 10)
    assert M.rmse(pred, gt) == pytest.approx(math.sqrt(5.0 / 10))
    assert M.log10(pred, gt) == pytest.approx((math.log10(2) + math.log10(1.5)) / 10)
    assert M.delta1(pred, gt) == pytest.approx(0.8)
    assert M.delta2(pred, gt) == pytest.approx(0.9)  # 1.5 < 1.5625 <= 2
    assert M.delta3(pred, gt) == pytest.approx(0.9)  # 1.25**3 = 1.953 < 2
    d = np.array([math.log(2), math.log(1.5)] + [0.0] * 8)
    assert M.silog(pred, gt) == pytest.approx(math.sqrt(np.mean(d ** 2) - np.mean(d) ** 2) * 100)
    assert M.i_rmse(pred, gt) == pytest.approx(math.sqrt(((0.25 - 0.5) ** 2 + (1 / 3 - 0.5) ** 2) / 10))


def test_delta3_threshold_is_1_25_cubed():
    gt = np.full((1, 4), 1.0)
    pred = np.array([[1.0, 1.9, 1.96, 2.0]])  # 1.25**3 = 1.953125
    assert M.delta3(pred, gt) == pytest.approx(0.5)


def test_evaluate_depth_clips_to_the_range_then_scores():
    gt = np.full((2, 5), 2.0)
    pred = gt.copy()
    pred[0, 0], pred[1, 4] = 4.0, 0.5
    result = M.evaluate_depth(pred, gt, None, 1.0, 3.5, "none")  # 4 -> 3.5, 0.5 -> 1.0
    assert result["abs_rel"] == pytest.approx((1.5 / 2 + 1.0 / 2) / 10)
    tiny = M.evaluate_depth(np.full((1, 2), -5.0), np.full((1, 2), 1.0), None, 0.0, 10.0, "none")
    assert tiny["abs_rel"] == pytest.approx(1.0 - 1e-6)  # clipped to >= 1e-6 after the range


def test_mean_is_over_images_not_pixels():
    big = M.evaluate_depth(np.full((10, 10), 1.1), np.ones((10, 10)), alignment="none")
    small = M.evaluate_depth(np.full((1, 1), 1.3), np.ones((1, 1)), alignment="none")
    summary = M.mean_metrics([big, None, small])
    assert summary["abs_rel"] == pytest.approx(0.2)
    assert summary["images"] == 2 and summary["skipped_empty"] == 1


def test_empty_mask_is_skipped_not_divided_by_zero():
    gt, pred = ramp(), ramp()
    empty = np.zeros_like(gt, dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from a 0/0
        assert math.isnan(M.abs_rel(pred, gt, empty))
        assert math.isnan(M.rmse(pred, gt, empty))
        assert M.evaluate_depth(pred, gt, empty) is None
        assert M.evaluate_depth(pred, np.full_like(gt, np.nan)) is None
        summary = M.mean_metrics([None, None])
    assert math.isnan(summary["abs_rel"]) and summary["images"] == 0 and summary["skipped_empty"] == 2
    with pytest.raises(M.EmptyMaskError):
        M.align_least_squares(pred, gt, empty)


def test_nan_and_inf_ground_truth_are_masked():
    gt, pred = ramp(), ramp() * 1.1
    gt_holes = gt.copy()
    gt_holes[0, :3] = [np.nan, np.inf, -np.inf]
    gt_holes[1, 0] = 0.0
    keep = np.isfinite(gt_holes) & (gt_holes > 0)
    assert M.valid_pixels(pred, gt_holes).sum() == gt.size - 4
    ours = M.evaluate_depth(pred, gt_holes, None, 1e-3, 10.0)
    ref = M.evaluate_depth(pred[keep], gt[keep], None, 1e-3, 10.0)  # the same pixels, flattened
    assert ours["abs_rel"] == pytest.approx(ref["abs_rel"]) and ours["valid_pixels"] == keep.sum()


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"prediction \(4, 5\).*ground truth \(5, 4\)"):
        M.abs_rel(np.ones((4, 5)), np.ones((5, 4)))
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(5, 4\)"):
        M.evaluate_depth(np.ones((4, 5)), np.ones((5, 4)))
    with pytest.raises(ValueError, match="valid mask"):
        M.abs_rel(np.ones((4, 5)), np.ones((4, 5)), np.ones((4, 4), dtype=bool))


def test_non_finite_prediction_on_valid_pixels_is_an_error():
    pred = ramp()
    pred[2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN/inf at 1 valid pixels"):
        M.evaluate_depth(pred, ramp())


def test_unknown_alignment_names_the_choices():
    with pytest.raises(ValueError, match="least_square_disparity"):
        M.align(ramp(), ramp(), alignment="median")


@pytest.mark.parametrize("height, width", [(4032, 6048), (6048, 4032), (1000, 3000), (1030, 1500)])
def test_alignment_columns_match_marigolds_torch_upsample(height, width):
    """Marigold's max_res downscale resamples a [1,H,W] tensor along its last axis only."""
    scale = float(np.min(1024 / np.array((height, width))))
    row = torch.arange(width, dtype=torch.float32).expand(1, 1, width).contiguous()
    expected = torch.nn.Upsample(scale_factor=scale, mode="nearest")(row)[0, 0].long().numpy()
    np.testing.assert_array_equal(M.alignment_columns(width, height, 1024), expected)
    assert M.alignment_columns(640, 480, 1024) is None  # Marigold only ever shrinks
    assert M.alignment_columns(1000, 900, 1024) is None


def test_alignment_with_max_resolution_fits_on_the_kept_columns():
    gt = np.tile(np.linspace(1, 3, 2048), (4, 1))
    pred = gt * 2.0
    pred[:, 1] = 50.0  # column 1 is not kept (columns 0, 2, 4, ...)
    _, (scale, shift) = M.align_least_squares(pred, gt, max_resolution=1024)
    assert (scale, shift) == (pytest.approx(0.5), pytest.approx(0.0, abs=1e-9))


# ------------------------------------------------------------------------------------------- boundaries

def box(size=(8, 8), inside=1.0, outside=4.0, rows=(3, 5), cols=(3, 5)):
    depth = np.full(size, outside)
    depth[rows[0]:rows[1], cols[0]:cols[1]] = inside
    return depth


def test_boundary_f1_is_one_on_identical_maps_with_edges_in_all_directions():
    assert M.boundary_f1(box(), box()) == pytest.approx(1.0)
    assert M.boundary_f1(box() * 7.0, box()) == pytest.approx(1.0)  # scale-invariant
    assert M.boundary_f1(np.ones((5, 5)), np.ones((5, 5))) == 0.0  # no edge anywhere: P = R = 0


def test_boundary_f1_hand_counted():
    """GT: a step in every row between columns 1 and 2 -> 3 'left' edges, no others.

    Prediction (inverse depth 1 / d): rows 0-1 as GT; row 2 = 1/[1, 4, 4, 4, 16] gives 'left' edges at columns
    0 and 3; columns 1 and 4 give 'top' edges between rows 1 and 2. Left: 4 predicted, 3 GT, 2 shared.
    Top: 2 predicted, 0 GT. Directions without edges count 0 (Depth Pro): P = (2/4 + 0/2 + 0 + 0) / 4 = 1/8,
    R = (2/3 + 0 + 0 + 0) / 4 = 1/6, F1 = 2PR / (P + R) = 1/7. All ratios are 4 or 1, so every threshold agrees.
    """
    gt = np.array([[1, 1, 4, 4, 4]] * 3, dtype=float)
    pred = np.array([[1, 1, 4, 4, 4], [1, 1, 4, 4, 4], [1, 4, 4, 4, 16]], dtype=float)
    precision, recall, f1 = M.boundary_scores(pred, gt, 1.1)
    assert (precision, recall, f1) == (pytest.approx(1 / 8), pytest.approx(1 / 6), pytest.approx(1 / 7))
    assert M.boundary_f1(pred, gt) == pytest.approx(1 / 7)


def test_boundary_thresholds_are_weighted_by_value():
    """A box with ratio 1.15 is an edge only for the 5 thresholds below 1.15: weight (5*1.05 + 0.2222)/11.5."""
    depth = box(inside=1.0, outside=1.15)
    expected = (5 * 1.05 + (0.2 / 9) * (0 + 1 + 2 + 3 + 4)) / 11.5
    assert M.boundary_f1(depth, depth) == pytest.approx(expected)


def test_boundary_f1_valid_mask_drops_pairs_with_an_invalid_pixel():
    gt, pred = box(), box()
    pred[3:5, 2] = 1.0  # the prediction's left edge is one column early
    assert M.boundary_f1(pred, gt) < 1.0
    valid = np.ones_like(gt, dtype=bool)
    valid[:, 2:4] = False  # hide both candidate left edges (pairs 1-2, 2-3)
    p, r, _ = M.boundary_scores(pred, gt, 1.1, valid)
    assert (p, r) == (pytest.approx(0.75), pytest.approx(0.75))  # left direction now empty on both sides


def test_boundary_recall_on_a_mask():
    mask = box(inside=1.0, outside=0.0, rows=(1, 3), cols=(1, 3))[:4, :4]  # 2x2 foreground in a 4x4 frame
    near_fg = np.where(mask > 0.5, 1.0, 4.0)
    assert M.boundary_recall(near_fg, mask) == pytest.approx(1.0)
    shifted = np.where(np.roll(mask, 1, axis=1) > 0.5, 1.0, 4.0)  # foreground moved one column right
    assert M.boundary_recall(shifted, mask) == pytest.approx(0.25)  # vertical directions half right, horizontal 0
    assert M.boundary_recall(near_fg, mask * 0.05) == 0.0  # alpha <= 0.1 is background


def test_boundary_recall_thins_edges_with_nms():
    """GT edge between columns 1 and 2. A ramp whose largest step is there is found; one whose largest step
    is one column early is not, although its ratio there also exceeds every threshold (NMS keeps the maximum)."""
    mask = np.array([[0, 0, 1, 1]] * 3, dtype=float)
    good = 1.0 / np.array([[1, 2, 5, 6]] * 3, dtype=float)  # inverse-depth steps 2, 2.5, 1.2
    bad = 1.0 / np.array([[1, 2.5, 5, 6]] * 3, dtype=float)  # steps 2.5, 2, 1.2
    assert M.boundary_recall(good, mask) == pytest.approx(0.25)  # one of four directions has GT edges
    assert M.boundary_recall(bad, mask) == 0.0
    assert M.boundary_recall(np.ones((3, 3)), np.ones((3, 3))) == 0.0


def test_boundary_shapes_must_match():
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(4, 3\)"):
        M.boundary_f1(np.ones((3, 4)), np.ones((4, 3)))
    with pytest.raises(ValueError, match="mask"):
        M.boundary_recall(np.ones((3, 4)), np.ones((3, 5)))
