"""Temporal alignment (fiffdepth_core.method.temporal): known per-frame affines are recovered, outliers are rejected,
scene cuts restart the reference, streaming equals batch, and the normalised clip spans [0, 1]."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fiffdepth_core.method.temporal import (AlignConfig, TemporalAligner, TemporalFilter, align_sequence, range_fit,
                                          robust_affine)
from train.datasets.procedural_scene import render, render_path


def unit_depth(depth: np.ndarray) -> torch.Tensor:
    """Planar depth (inf = sky) -> [0,1] like the model's raw output (2/98% quantiles, clipped)."""
    depth = np.where(np.isfinite(depth), depth, 80.0)
    low, high = np.quantile(depth, [0.02, 0.98])
    return torch.from_numpy(np.clip((depth - low) / (high - low), 0.0, 1.0)).float()


def random_affines(frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 2.0, frames), rng.uniform(-0.3, 0.3, frames)


def test_static_clip_recovers_each_frame_affine_exactly():
    truth = unit_depth(render(48, 64, 2, 0)[1])  # [H,W]
    scales, shifts = random_affines(6, seed=1)
    raw = torch.stack([truth * float(s) + float(t) for s, t in zip(scales, shifts)])  # [T,H,W]
    aligned, steps = align_sequence(raw, normalize=False)
    first = raw[0]
    for k, step in enumerate(steps):  # every frame lands in frame 0's units: s0/sk and t0 - s0*tk/sk
        assert step.cut == (k == 0)
        assert step.scale == pytest.approx(scales[0] / scales[k], rel=1e-6)
        assert step.shift == pytest.approx(shifts[0] - scales[0] * shifts[k] / scales[k], abs=1e-6)
        assert torch.allclose(aligned[k], first, atol=1e-5), k


def test_noise_and_outliers_stay_within_bounds():
    gen = torch.Generator().manual_seed(0)
    truth = unit_depth(render(64, 96, 3, 0)[1])
    scales, shifts = random_affines(8, seed=2)
    frames = []
    for k, (s, t) in enumerate(zip(scales, shifts)):
        noisy = truth + 0.01 * torch.randn(truth.shape, generator=gen)
        noisy[5 + 3 * k:35 + 3 * k, 20:60] = torch.rand((30, 40), generator=gen)  # a "moving object": 20% of pixels
        frames.append(noisy * float(s) + float(t))
    raw = torch.stack(frames)
    aligned, steps = align_sequence(raw, normalize=False)
    assert not any(step.cut for step in steps[1:])
    reference = truth * float(scales[0]) + float(shifts[0])  # frame 0's units, without noise
    static = torch.ones_like(truth, dtype=torch.bool)
    static[5:56, 20:60] = False  # never covered by the object
    for k in range(1, len(frames)):
        error = (aligned[k] - reference)[static].abs().mean() / float(scales[0])  # in units of the true depth
        assert error < 0.012, (k, float(error))  # the noise alone is 0.008 on average
    # The same frames under plain least squares: the outliers drag the fit far past that bound.
    x, y = raw[3].reshape(-1), raw[0].reshape(-1)
    design = torch.stack([x, torch.ones_like(x)], 1).double()
    plain = torch.linalg.lstsq(design, y.double()[:, None]).solution[:, 0]
    plain_error = ((raw[3] * plain[0] + plain[1]) - reference)[static].abs().mean() / float(scales[0])
    assert plain_error > 0.03, float(plain_error)


def test_robust_fit_ignores_outliers_in_y():
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(5000, generator=gen)
    y = 1.7 * x - 0.2
    y[:1500] = torch.rand(1500, generator=gen) * 3.0  # 30% garbage
    scale, shift, inliers = robust_affine(x, y)
    assert scale == pytest.approx(1.7, rel=1e-6) and shift == pytest.approx(-0.2, abs=1e-6)
    assert inliers[1500:].all() and inliers[:1500].mean() < 0.05


def test_camera_motion_is_followed():
    truth = [unit_depth(d) for _, d in render_path(48, 64, 4, 0, frames=10, step=0.05, turn=0.5)]
    scales, shifts = random_affines(len(truth), seed=3)
    raw = torch.stack([g * float(s) + float(t) for g, s, t in zip(truth, scales, shifts)])
    aligned, steps = align_sequence(raw, normalize=False)
    assert not any(step.cut for step in steps[1:])
    for k in range(1, len(truth)):  # the camera moves, so the model's normalisation of each frame moves too:
        expected = truth[k] * float(scales[0]) + float(shifts[0])  # bounded, not exact
        assert (aligned[k] - expected).abs().median() < 0.05 * float(scales[0]), k
    flicker_raw = (raw[1:] - raw[:-1]).abs().mean()
    flicker_aligned = (aligned[1:] - aligned[:-1]).abs().mean()
    assert flicker_aligned < 0.2 * flicker_raw


@pytest.mark.parametrize("scenes", [(5, 6), (0, 1)])  # cut found by disagreement / by an inverted fit
def test_scene_cut_restarts_the_reference(scenes):
    first = unit_depth(render(48, 64, scenes[0], 0)[1])
    second = unit_depth(render(48, 64, scenes[1], 0)[1])
    scales, shifts = random_affines(8, seed=4)
    clip = [first] * 4 + [second] * 4
    raw = torch.stack([g * float(s) + float(t) for g, s, t in zip(clip, scales, shifts)])
    aligned, steps = align_sequence(raw, normalize=False)
    assert [step.cut for step in steps] == [True, False, False, False, True, False, False, False]
    assert torch.equal(aligned[4], raw[4])  # the new shot starts from its own raw depth
    for k in range(5, 8):  # ... and later frames align to it, not to the old scene
        assert torch.allclose(aligned[k], raw[4], atol=1e-5), k
    if scenes == (5, 6):  # without the agreement test the new shot is forced onto the old scene's reference
        forced, steps = align_sequence(raw, AlignConfig(min_agreement=0.0), normalize=False)
        assert not steps[4].cut and not torch.allclose(forced[4], raw[4], atol=1e-2)


def test_streaming_equals_batch_and_normalised_clip_spans_unit_range():
    truth = [unit_depth(d) for _, d in render_path(32, 48, 6, 1, frames=5)]
    scales, shifts = random_affines(5, seed=6)
    raw = torch.stack([g * float(s) + float(t) for g, s, t in zip(truth, scales, shifts)])
    config = AlignConfig(decay=0.3)
    aligner = TemporalAligner(config)
    streamed = []
    for k, frame in enumerate(raw):
        before = None if aligner.reference is None else aligner.reference.clone()
        out, step = aligner.update(frame)
        streamed.append(out)
        if before is not None:  # the reference follows with the configured decay, widened back by at most 2 %
            mixed = (0.7 * before + 0.3 * out).double()
            low, high = np.quantile(mixed.numpy(), [0.02, 0.98])
            was_low, was_high = np.quantile(before.double().numpy(), [0.02, 0.98])
            factor = min(max((was_high - was_low) / (high - low), 1.0), 1.02)
            middle = 0.5 * (low + high)
            assert torch.allclose(aligner.reference.double(), (mixed - middle) * factor + middle, atol=1e-5)
    batch, _ = align_sequence(raw, config, normalize=False)
    assert torch.equal(torch.stack(streamed), batch)
    unit, _ = align_sequence(raw, config)
    assert float(unit.min()) == 0.0 and float(unit.max()) == 1.0
    low, high = float(batch.min()), float(batch.max())
    assert torch.allclose(unit, (batch - low) / (high - low), atol=1e-6)  # one affine for the whole clip


def test_normalised_clip_ends_exactly_at_zero_and_one():
    """The clip's nearest and farthest points are exactly 0 and 1, not an ulp off (``scale * x + shift`` with
    ``scale = 1 / (high - low)`` ends this clip at 0.99999994)."""
    clip = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(4)) * 0.5 + 0.2
    unit, _ = align_sequence(clip)
    assert float(unit.min()) == 0.0 and float(unit.max()) == 1.0


def test_bad_input_is_named():
    aligner = TemporalAligner()
    aligner.update(torch.zeros(8, 8))
    with pytest.raises(ValueError, match=r"frame 2 is \(8, 9\).*\(8, 8\)"):
        aligner.update(torch.zeros(8, 9))
    with pytest.raises(ValueError, match=r"`depth` must be one frame \[H,W\]"):
        aligner.update(torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match=r"`depths` must be a clip \[T,H,W\]"):
        align_sequence(torch.zeros(0, 4, 4))
    with pytest.raises(ValueError, match=r"`decay` must be in \(0.0, 1.0\], got 0"):
        AlignConfig(decay=0)
    with pytest.raises(ValueError, match="`sample_pixels` must be a positive integer"):
        AlignConfig(sample_pixels=0)


def reference_stabilized(aligned: np.ndarray, history_weight: float, noise_sigmas: float) -> np.ndarray:
    """The temporal filter written out pixel by pixel in float64 (no cuts), from the formula in temporal.py."""
    frames, height, width = aligned.shape
    out = np.empty_like(aligned, dtype=np.float64)
    out[0] = aligned[0]
    for k in range(1, frames):
        changes = sorted(abs(aligned[k, i, j] - out[k - 1, i, j]) for i in range(height) for j in range(width))
        position = 0.25 * (len(changes) - 1)  # the first quartile, interpolated between order statistics
        below = int(position)
        quartile = changes[below] + (position - below) * (changes[min(below + 1, len(changes) - 1)] - changes[below])
        sigma = quartile / 0.31863  # |N(0, s)| has its first quartile at 0.31863 s
        for i in range(height):
            for j in range(width):
                change = aligned[k, i, j] - out[k - 1, i, j]
                weight = history_weight * np.exp(-0.5 * (change / (noise_sigmas * sigma)) ** 2)
                out[k, i, j] = aligned[k, i, j] + weight * (out[k - 1, i, j] - aligned[k, i, j])
    return out


def noisy_static_clip(frames: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A still scene whose per-frame depth jitters by Gaussian noise (no affine): ``(truth [H,W], clip [T,H,W])``."""
    gen = torch.Generator().manual_seed(seed)
    truth = unit_depth(render(24, 32, 1, 0)[1])
    return truth, torch.stack([truth + noise * torch.randn(truth.shape, generator=gen) for _ in range(frames)])


def test_stabilize_matches_the_filter_written_out_per_pixel():
    _, clip = noisy_static_clip(5, 0.02, seed=7)
    aligned, _ = align_sequence(clip, normalize=False)  # the filter's input: alignment alone
    config = AlignConfig(history_weight=0.7, noise_sigmas=2.0)
    stabilized, steps = align_sequence(clip, config, normalize=False, stabilize=True)
    assert [s.scale for s in steps] == [s.scale for s in align_sequence(clip, config, normalize=False)[1]]
    expected = reference_stabilized(aligned.double().numpy(), 0.7, 2.0)
    assert np.abs(stabilized.double().numpy() - expected).max() < 2e-5  # float32 against float64


def test_stabilize_removes_pixel_jitter_that_alignment_cannot():
    truth, clip = noisy_static_clip(12, 0.02, seed=8)
    aligned, _ = align_sequence(clip, normalize=False)
    stabilized, _ = align_sequence(clip, normalize=False, stabilize=True)
    jitter_aligned = (aligned[1:] - aligned[:-1]).abs().mean()
    jitter_stabilized = (stabilized[1:] - stabilized[:-1]).abs().mean()
    assert jitter_stabilized < 0.4 * jitter_aligned, (float(jitter_stabilized), float(jitter_aligned))
    error_aligned = (aligned[6:] - truth).abs().mean()  # averaging frames also brings each closer to the truth
    assert (stabilized[6:] - truth).abs().mean() < 0.7 * error_aligned


def test_stabilize_lets_motion_through_at_once():
    truth, clip = noisy_static_clip(8, 0.01, seed=9)
    clip[4:, 6:14, 8:20] += 0.5  # something moves in front at frame 4: a change of 50 noise levels
    stabilized, steps = align_sequence(clip, normalize=False, stabilize=True)
    aligned, _ = align_sequence(clip, normalize=False)
    assert not any(s.cut for s in steps[1:])
    moved = torch.zeros_like(truth, dtype=torch.bool)
    moved[6:14, 8:20] = True
    for k in (4, 5):  # the moved region takes its new depth in the frame it appears: no ghost of the old one
        lag = (stabilized[k] - aligned[k])[moved].abs().max()
        assert lag < 0.02, (k, float(lag))
    # An ungated average (same history weight everywhere) would drag the old depth along for several frames.
    ungated, _ = align_sequence(clip, AlignConfig(noise_sigmas=100.0), normalize=False, stabilize=True)
    assert (ungated[4] - aligned[4])[moved].abs().mean() > 0.2


def test_the_filter_lets_a_large_moving_object_through():
    """Most of the frame moves (a close object filling 60 % of it): the noise level comes from the still part."""
    truth, clip = noisy_static_clip(5, 0.01, seed=11)
    clip[3:, :, :19] += 0.3  # 30 noise levels, over 60 % of the frame
    filt = TemporalFilter()
    out = torch.stack([filt.update(frame) for frame in clip])
    lag = (out[3] - clip[3])[:, :19].abs().mean()
    assert lag < 0.01, float(lag)  # passed at once (a median-based noise level would average it away)
    still = (out[1:] - out[:-1])[:, :, 19:].abs().mean()
    assert still < 0.6 * (clip[1:] - clip[:-1])[:, :, 19:].abs().mean()  # while the still part stays filtered
    with pytest.raises(ValueError, match=r"frame is \(8, 8\), but earlier frames were \(24, 32\)"):
        filt.update(torch.zeros(8, 8))


def test_stabilize_restarts_its_history_at_a_scene_cut():
    first = unit_depth(render(48, 64, 5, 0)[1])
    second = unit_depth(render(48, 64, 6, 0)[1])
    gen = torch.Generator().manual_seed(10)
    clip = torch.stack([g + 0.005 * torch.randn(g.shape, generator=gen) for g in [first] * 4 + [second] * 4])
    stabilized, steps = align_sequence(clip, normalize=False, stabilize=True)
    assert steps[4].cut
    assert torch.equal(stabilized[4], clip[4])  # the new shot's first frame owes nothing to the old scene
    assert (stabilized[5:] - second).abs().mean() < 0.005


def test_stabilize_settings_are_checked():
    with pytest.raises(ValueError, match=r"`history_weight` must be in \[0.0, 0.99\], got 1.0"):
        AlignConfig(history_weight=1.0)
    with pytest.raises(ValueError, match=r"`noise_sigmas` must be in \(0.0, 100.0\], got 0"):
        AlignConfig(noise_sigmas=0)


def pictures_of(scene: int, frames: int, gains=None) -> list[torch.Tensor]:
    """A still shot's pictures ``[3,H,W]``, each frame's exposure scaled by ``gains``."""
    rgb = torch.from_numpy(render(48, 64, scene, 0)[0])
    return [(rgb * (1.0 if gains is None else float(gains[k]))).clamp(0, 1) for k in range(frames)]


def test_range_fit_matches_range_and_median_by_hand():
    x = np.array([0.0, 1.0, 2.0, 3.0, 10.0])
    y = 3.0 * x - 1.0
    assert range_fit(x, y) == pytest.approx((3.0, -1.0))
    x = np.linspace(0, 1, 101)
    y = np.linspace(2, 4, 101) ** 2  # monotone, not affine: the 2-98 % ranges and medians still match
    scale, shift = range_fit(x, y)
    assert scale == pytest.approx((y[98] - y[2]) / (x[98] - x[2])) and shift == pytest.approx(y[50] - scale * x[50])


def test_pictures_decide_the_cuts_and_an_unsteady_depth_is_aligned_anyway():
    """Two still shots spliced at frame 4, whose per-frame depth is unsteady: half of each frame is replaced by
    noise (the model answering each exposure anew). The depth alone calls every frame a cut; the pictures say two
    shots, and each frame is aligned by range instead, its structure kept."""
    gen = torch.Generator().manual_seed(12)
    truth = [unit_depth(render(48, 64, s, 0)[1]) for s in (5, 6)]
    gains = 1 + 0.25 * np.sin(2 * np.pi * np.arange(8) / 5)
    pictures = pictures_of(5, 4, gains[:4]) + pictures_of(6, 4, gains[4:])
    scales, shifts = random_affines(8, seed=13)
    raw = []
    for k in range(8):
        frame = truth[k // 4].clone()
        frame[:, k % 2::2] = torch.rand(48, 32, generator=gen)  # every other column is noise
        raw.append(frame * float(scales[k]) + float(shifts[k]))
    raw = torch.stack(raw)
    _, alone = align_sequence(raw, normalize=False)
    assert sum(step.cut for step in alone[1:]) >= 5  # the depth-based rule: unsteady = cut
    aligned, steps = align_sequence(raw, normalize=False, frames=torch.stack(pictures))
    assert [step.cut for step in steps] == [True, False, False, False, True, False, False, False]
    assert all(steps[k].unsteady for k in (1, 2, 3, 5, 6, 7))
    errors, unaligned = [], []
    for k in range(8):  # each frame back in its shot's first frame's units, where it kept the true depth
        first, kept = 4 * (k // 4), slice(1 - k % 2, None, 2)
        expected = truth[k // 4][:, kept] * float(scales[first]) + float(shifts[first])
        errors.append(float((aligned[k][:, kept] - expected).abs().median()) / float(scales[first]))
        unaligned.append(float((raw[k][:, kept] - expected).abs().median()) / float(scales[first]))
    assert max(errors) < 0.08 and np.mean(errors) < 0.25 * np.mean(unaligned), (errors, unaligned)


def test_an_unsteady_shot_keeps_its_depth_range_instead_of_flattening():
    """Frames that barely correlate (30 % shared structure): a least-squares fit would shrink each towards the
    reference's mean and the reference with it, frame after frame; the range fit and the widened reference keep
    the depth's range over a long shot."""
    gen = torch.Generator().manual_seed(14)
    base = unit_depth(render(32, 48, 3, 0)[1])
    raw = torch.stack([0.3 * base + 0.7 * torch.rand(base.shape, generator=gen) for _ in range(40)])
    pictures = torch.stack(pictures_of(3, 40)[:1] * 40)
    aligned, steps = align_sequence(raw, normalize=False, frames=pictures)
    assert not any(step.cut for step in steps[1:])
    spans = [float(np.subtract(*np.quantile(frame.numpy(), [0.98, 0.02]))) for frame in aligned]
    assert min(spans) > 0.8 * spans[0], spans


def test_pictures_come_with_every_frame_or_none():
    aligner = TemporalAligner()
    aligner.update(torch.rand(8, 8), torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="frame 2: pictures must be given with every frame of a clip or with none"):
        aligner.update(torch.rand(8, 8))
    with pytest.raises(ValueError, match=r"`frames` must be the clip's pictures \[T,C,H,W\] with T = 3, got shape "
                                         r"\(2, 3, 8, 8\)"):
        align_sequence(torch.rand(3, 8, 8), frames=torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"`picture_gate` must be in \[1.0, 100.0\], got 0.5"):
        AlignConfig(picture_gate=0.5)
