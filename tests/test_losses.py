"""Training losses against hand-computed values and against diffusers' own scheduler maths."""

from __future__ import annotations

import pytest
import torch

from fiffdepth_core.method.losses import (
    LossWeights,
    check_timesteps,
    depth_loss,
    gradient_matching,
    latent_valid_mask,
    masked_mae,
    sd2_alphas_cumprod,
    total_loss,
    trajectory_targets,
)


def test_latent_mask_needs_all_64_pixels_valid():
    valid = torch.ones(1, 1, 16, 24, dtype=torch.bool)
    valid[0, 0, 3, 10] = False  # under latent cell (0, 1)
    valid[0, 0, 15, 23] = False  # under latent cell (1, 2)
    mask = latent_valid_mask(valid)
    assert mask.shape == (1, 4, 2, 3)
    expected = torch.tensor([[True, False, True], [True, True, False]])
    assert torch.equal(mask[0, 0], expected) and torch.equal(mask[0, 3], expected)


def test_masked_mae_by_hand():
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    target = torch.tensor([[[[0.0, 0.0], [0.0, 10.0]]]])
    mask = torch.tensor([[[[True, False], [True, True]]]])
    assert masked_mae(pred, target, mask).item() == pytest.approx((1 + 3 + 6) / 3)


def naive_gradient_matching(pred, target, mask, scales):
    """Loop-by-loop MiDaS gradient matching, written independently of the vectorised version."""
    total = 0.0
    b, c, h, w = pred.shape
    for k in range(scales):
        step = 2 ** k
        ys, xs = range(0, h, step), range(0, w, step)
        count, acc = 0, 0.0
        for n in range(b):
            for ch in range(c):
                for i, y in enumerate(ys):
                    for j, x in enumerate(xs):
                        if not mask[n, ch, y, x]:
                            continue
                        count += 1
                        r = pred[n, ch, y, x] - target[n, ch, y, x]
                        if j + 1 < len(xs) and mask[n, ch, y, xs[j + 1]]:
                            acc += abs(r - (pred[n, ch, y, xs[j + 1]] - target[n, ch, y, xs[j + 1]]))
                        if i + 1 < len(ys) and mask[n, ch, ys[i + 1], x]:
                            acc += abs(r - (pred[n, ch, ys[i + 1], x] - target[n, ch, ys[i + 1], x]))
        if count:
            total += acc / count
    return float(total)


def test_gradient_matching_matches_a_loop_reference():
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 4, 9, 11, generator=gen), torch.randn(2, 4, 9, 11, generator=gen)
    mask = torch.rand(2, 4, 9, 11, generator=gen) > 0.2
    ours = gradient_matching(pred, target, mask, scales=4).item()
    assert ours == pytest.approx(naive_gradient_matching(pred, target, mask, 4), rel=1e-5)


def test_gradient_matching_small_case_by_hand():
    # One channel, 2x2, all valid, scale 0 only: residual [[1,0],[0,0]] -> |0-1| right + |0-1| down = 2 over 4 cells.
    pred = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    assert gradient_matching(pred, torch.zeros_like(pred), torch.ones_like(pred, dtype=torch.bool), 1).item() == 0.5
    # A constant offset has no gradient: GM ignores shifts.
    assert gradient_matching(pred + 3, pred, torch.ones_like(pred, dtype=torch.bool), 4).item() == 0.0


def test_empty_masks_give_zero_with_a_graph():
    pred = torch.randn(1, 4, 4, 4, requires_grad=True)
    none = torch.zeros(1, 4, 4, 4, dtype=torch.bool)
    loss = masked_mae(pred, torch.zeros_like(pred), none) + gradient_matching(pred, torch.zeros_like(pred), none)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))


def test_sd2_schedule_matches_diffusers_and_known_values():
    from diffusers import DDPMScheduler

    ours = sd2_alphas_cumprod()
    theirs = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).alphas_cumprod
    assert torch.equal(ours, theirs)
    assert ours[0].item() == pytest.approx(0.99915, abs=1e-5)
    assert ours[999].item() == pytest.approx(0.00466, abs=1e-5)


def test_trajectory_targets_match_diffusers_add_noise_and_velocity():
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    gen = torch.Generator().manual_seed(1)
    x0, d0, noise = (torch.randn(3, 4, 5, 6, generator=gen) for _ in range(3))
    t = torch.tensor([0, 500, 999])
    b_t, v_t = trajectory_targets(x0, d0, t, noise, sd2_alphas_cumprod(), gamma=0.5)
    blend = 0.5 * x0 + 0.5 * d0
    assert torch.allclose(b_t, scheduler.add_noise(blend, noise, t), atol=1e-6)
    assert torch.allclose(v_t, scheduler.get_velocity(blend, noise, t), atol=1e-6)


def test_minus_one_never_reaches_the_schedule():
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    x = torch.ones(1, 1, 1, 1)
    # The trap: diffusers silently reads alphas_cumprod[-1] (= t 999) for t = -1 ...
    assert torch.equal(scheduler.add_noise(x, x, torch.tensor([-1])), scheduler.add_noise(x, x, torch.tensor([999])))
    # ... ours refuses it, and floats.
    with pytest.raises(ValueError, match="filter pass"):
        trajectory_targets(x, x, torch.tensor([-1]), x, sd2_alphas_cumprod())
    with pytest.raises(TypeError, match="integers"):
        check_timesteps(torch.tensor([0.5]), 1000)


def test_total_loss_uses_the_paper_weights():
    w = LossWeights()
    assert (w.mae, w.gm, w.keep, w.gamma) == (1.0, 0.5, 0.2, 0.5)
    pred = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    mask = torch.ones_like(pred, dtype=torch.bool)
    branch = depth_loss(pred, torch.zeros_like(pred), mask, LossWeights(gm_scales=1))
    assert branch["mae"].item() == 0.25 and branch["gm"].item() == 0.5
    assert branch["total"].item() == pytest.approx(0.25 + 0.5 * 0.5)
    total = total_loss(branch, branch, torch.tensor(2.0), w)
    assert total.item() == pytest.approx(2 * 0.5 + 0.2 * 2.0)
