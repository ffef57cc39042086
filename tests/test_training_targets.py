"""Training targets: the teacher's disparity -> depth target, and trajectory keeping over valid cells only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fiffdepth_core.method.depth_norm import disparity_to_depth_target, normalize_depth
from fiffdepth_core.method.losses import masked_mse


def outdoor_photo(height: int = 100, width: int = 64, sky_rows: int = 30) -> torch.Tensor:
    """A teacher disparity map: ``sky_rows`` rows of sky (disparity 0) above a scene whose depth runs from 20
    (top) to 1 (bottom), with a little texture across the columns."""
    depth = np.linspace(20.0, 1.0, height - sky_rows, dtype=np.float32)[:, None]  # [h,1]
    texture = 1.0 + 0.05 * np.sin(np.arange(width, dtype=np.float32))[None, :]  # [1,W]
    disparity = np.zeros((height, width), dtype=np.float32)
    disparity[sky_rows:] = texture / depth
    return torch.from_numpy(disparity)[None]  # [1,H,W]


def reference_target(disparity: np.ndarray, eps: float, low: float, high: float) -> np.ndarray:
    """The revised recipe written out with numpy, pixel by pixel where it matters."""
    top = np.percentile(disparity, 99)
    capped = disparity < eps * top
    depth = 1.0 / disparity[~capped]
    d_low, d_high = np.percentile(depth, 100 * low), np.percentile(depth, 100 * high)
    out = np.ones_like(disparity)
    out[~capped] = np.clip((depth - d_low) / (d_high - d_low) * 2 - 1, -1, 1)
    return out


def test_thirty_percent_sky_keeps_the_ground_spread_over_the_range():
    disparity = outdoor_photo()
    target, valid = disparity_to_depth_target(disparity)
    sky = disparity == 0
    assert sky.float().mean().item() == pytest.approx(0.3)
    assert valid.all()  # sky stays valid ...
    assert torch.equal(target[sky], torch.ones(int(sky.sum())))  # ... and saturates at +1 (far)
    ground = target[~sky]
    # Spread over most of [-1, 1]; the old recipe squeezed it into [-1, -0.95] (q98 was the sky).
    assert ground.min().item() == -1.0 and ground.max().item() == 1.0
    assert torch.quantile(ground, 0.1).item() < -0.7 and torch.quantile(ground, 0.9).item() > 0.7
    assert (ground > -0.95).float().mean().item() > 0.9
    # Nearer (bottom) rows have smaller targets than farther (upper) ground rows.
    rows = target[0, 30:].mean(dim=1)
    assert (rows[1:] <= rows[:-1]).all()


def test_target_matches_a_numpy_reference():
    gen = torch.Generator().manual_seed(3)
    disparity = torch.rand(1, 24, 20, generator=gen) * 5 + 0.1
    disparity[0, :6] = 0.0  # 25 % sky
    disparity[0, 6, :4] = 1e-5  # far pixels below the cap, not exactly zero
    target, valid = disparity_to_depth_target(disparity, eps=1e-3, low=0.05, high=0.9)
    expected = reference_target(disparity[0].numpy(), 1e-3, 0.05, 0.9)
    assert valid.all()
    np.testing.assert_allclose(target[0].numpy(), expected, atol=1e-6)


def test_without_capped_pixels_it_is_plain_normalised_inverse_disparity():
    disparity = torch.linspace(0.5, 4.0, 200).reshape(1, 10, 20)
    target, valid = disparity_to_depth_target(disparity)
    expected, expected_valid = normalize_depth(1.0 / disparity, torch.ones_like(disparity, dtype=torch.bool))
    assert torch.equal(valid, expected_valid)
    assert torch.allclose(target, expected, atol=1e-6)


def test_non_finite_teacher_pixels_are_invalid_and_ignored():
    disparity = outdoor_photo(40, 16, 10)
    clean, _ = disparity_to_depth_target(disparity)
    dirty = disparity.clone()
    dirty[0, 20, 3] = float("nan")
    dirty[0, 25, 5] = float("inf")
    target, valid = disparity_to_depth_target(dirty)
    assert not valid[0, 20, 3] and not valid[0, 25, 5] and valid.sum() == valid.numel() - 2
    assert target[0, 20, 3] == 0 and target[0, 25, 5] == 0
    assert (target[valid] - clean[valid]).abs().max() < 0.05  # two pixels barely move the quantiles


def test_flat_or_empty_teacher_maps_give_no_target():
    for disparity in (torch.zeros(1, 8, 8), torch.full((1, 8, 8), float("nan")), torch.full((1, 8, 8), 2.0)):
        target, valid = disparity_to_depth_target(disparity)
        assert not valid.any() and torch.equal(target, torch.zeros_like(target))


def test_masked_mse_by_hand_ignores_the_invalid_region():
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 100.0]]]])
    target = torch.tensor([[[[0.0, 0.0], [1.0, -100.0]]]])
    mask = torch.tensor([[[[True, True], [True, False]]]])
    assert masked_mse(pred, target, mask).item() == pytest.approx((1 + 4 + 4) / 3)
    none = torch.zeros_like(mask)
    assert masked_mse(pred, target, none).item() == 0.0
    full = torch.ones_like(mask)
    assert masked_mse(pred, target, full).item() == pytest.approx(torch.nn.functional.mse_loss(pred, target).item())
