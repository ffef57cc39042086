"""Video depth metrics (fiffdepth_core.method.video_metrics) against hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest

from fiffdepth_core.method.video_metrics import align_clip, clip_abs_rel, clip_scores, temporal_change


def test_one_alignment_for_the_whole_clip():
    rng = np.random.default_rng(0)
    gt = rng.uniform(1.0, 5.0, (3, 4, 5))
    pred = (gt - 0.7) / 2.5  # one affine for the clip
    assert np.allclose(align_clip(pred, gt), gt)
    flicker = pred * np.array([1.0, 1.3, 0.8])[:, None, None]  # a different scale per frame cannot be undone
    assert not np.allclose(align_clip(flicker, gt), gt, atol=1e-2)


def test_temporal_change_at_static_points_by_hand():
    gt = np.array([[[2.0, 4.0]], [[2.0, 8.0]], [[2.0, 8.0]]])  # pixel 1 changes between frames 0 and 1: not static
    pred = np.array([[[2.2, 1.0]], [[1.8, 9.0]], [[2.0, 3.0]]])
    # static: (k=0, px 0), (k=1, px 0), (k=1, px 1); |change| / gt[k]: 0.4/2, 0.2/2, 6/8
    assert temporal_change(pred, gt) == pytest.approx((0.2 + 0.1 + 0.75) / 3)
    valid = np.ones_like(gt, dtype=bool)
    valid[2, 0, 1] = False  # a pixel must be counted in both frames
    assert temporal_change(pred, gt, valid) == pytest.approx((0.2 + 0.1) / 2)
    assert temporal_change(gt, gt) == 0.0


def test_abs_rel_and_scores():
    gt = np.array([[[1.0, 2.0]], [[4.0, np.inf]]])  # inf = sky: not counted
    pred = np.array([[[1.5, 2.0]], [[3.0, 0.0]]])
    assert clip_abs_rel(pred, gt) == pytest.approx((0.5 + 0.0 + 0.25) / 3)
    still = np.array([[[1.0, 2.0]], [[1.0, 2.5]]])
    scores = clip_scores(still * 3.0 + 1.0, still)  # an affine of the truth: perfect after one alignment
    assert scores["abs_rel"] == pytest.approx(0.0, abs=1e-9) and scores["temporal_change"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="no static points"):
        temporal_change(gt, gt)
    with pytest.raises(ValueError, match="clips"):
        clip_abs_rel(pred[0], gt[0])
