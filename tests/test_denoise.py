"""Still-area denoising before the model (method/denoise.py): a still noisy clip comes out as the mean of the frames
around each one (a hand computation), a moving object leaves no trail, a pixel nothing differs from comes back bit
for bit, shots are never mixed, and the CLI's temporal modes predict from the steadied frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fiffdepth_core.method.denoise import BOX, RADIUS, average_still, denoised, noise_level, steady_clip, steady_frames
from fiffdepth_core.method.exposure import level_exposure
from train.datasets.procedural_scene import render

NOISE = 2.0 / 255  # Gaussian noise of the test clips: about a codec's or a sensor's at 8 bits


def base(size=(48, 64), scene: int = 3) -> torch.Tensor:
    return torch.from_numpy(render(*size, scene, 0)[0]).float()  # [3,H,W] in [0,1]


def noisy(frame: torch.Tensor, frames: int, seed: int = 0, sigma: float = NOISE) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((frames, *frame.shape), generator=generator) * sigma
    return frame[None] + noise  # [T,3,H,W] (not clipped: the sums below stay exact)


def test_a_still_noisy_clip_becomes_the_mean_of_the_frames_around_each_frame():
    clip = noisy(base(), 9)
    out = list(denoised(iter(clip), [0] * 9))
    assert len(out) == 9
    for t, frame in enumerate(out):
        window = clip[max(0, t - RADIUS):t + RADIUS + 1]  # by hand: every neighbour agrees at every pixel
        assert torch.allclose(frame, window.mean(0), atol=1e-6), t
    middle = (out[4] - base()).std() / (clip[4] - base()).std()  # the noise of the middle frame: 1 / sqrt(7)
    assert 0.9 / np.sqrt(7) < float(middle) < 1.1 / np.sqrt(7)


def test_the_noise_level_is_the_lower_quartile_kept_within_its_range():
    diff = torch.linspace(0, 8 / 255, 4001).reshape(1, -1)  # 0 .. 8 levels: lower quartile 2 levels
    assert noise_level(diff) == pytest.approx(2 / 255, rel=1e-3)
    assert noise_level(diff * 0) == pytest.approx(0.5 / 255) and noise_level(diff * 4) == pytest.approx(2 / 255)
    assert noise_level(diff / 4) == pytest.approx(0.5 / 255)


def test_a_moving_object_leaves_no_trail_and_keeps_its_own_pixels():
    background = base()
    frames, squares = [], []
    for t in range(7):  # a bright square (0.5 above the background) moving 6 pixels a frame over a still background
        frame = background.clone()
        square = (slice(16, 32), slice(4 + 6 * t, 20 + 6 * t))
        frame[:, square[0], square[1]] += 0.5
        frames.append(frame)
        squares.append(square)
    clip = noisy(torch.zeros_like(background), 7, seed=1) + torch.stack(frames)
    out = list(denoised(iter(clip), [0] * 7))
    t = 3
    inside = torch.zeros(background.shape[1:], dtype=torch.bool)
    inside[squares[t]] = True
    # by hand: no pixel is pulled towards another frame's content by more than the noise (a trail of the square
    # behind or ahead of it would be +0.5 * k / 7; background pulled into the square would be -0.5 * k / 7)
    expected = torch.stack(frames)[t]
    assert float((out[t] - expected).abs().amax()) < 5 * NOISE
    background_error = float((out[t] - expected)[:, ~inside].abs().mean())
    assert background_error < 0.6 * float((clip[t] - expected)[:, ~inside].abs().mean())  # denoised meanwhile


def test_a_slow_pan_over_a_smooth_surface_is_not_averaged():
    """A low-contrast texture panning one pixel a frame differs from its neighbours by about a level (under the noise
    gate): a neighbour shifted by one pixel matches it exactly, so nothing is averaged and every frame comes back as
    it was (averaging would blur it: 0.006 mean error measured without the shift test)."""
    x = torch.arange(64, dtype=torch.float32)
    clip = torch.stack([(0.5 + 0.02 * torch.sin(2 * torch.pi * (x - t) / 16)).expand(3, 48, 64) for t in range(7)])
    out = steady_clip(clip)
    assert float((out - clip).abs().amax()) == 0.0


def test_a_pixel_no_neighbour_differs_from_comes_back_bit_for_bit():
    frame = base()
    still = torch.ones(frame.shape[1:], dtype=torch.bool)
    assert torch.equal(average_still(frame, [(frame.clone(), frame.mean(0), still)] * 2), frame)
    still = torch.stack([frame] * 5)
    assert all(torch.equal(a, frame) for a in denoised(iter(still), [0] * 5))
    assert torch.equal(steady_clip(still), still)
    moved = still.clone()
    moved[2, :, :8, :8] = 1.0 - moved[2, :, :8, :8]  # one frame changes in one corner only
    out = steady_clip(moved)
    far = (slice(None), slice(8 + BOX, None), slice(8 + BOX, None))  # beyond the corner and the comparison box
    assert all(torch.equal(out[t][far], frame[far]) for t in range(5))


def test_shots_are_never_mixed_and_frames_come_out_in_order():
    grey = torch.full((3, 24, 32), 0.5)
    clip = [grey, grey, grey + 2 / 255, grey + 2 / 255, grey + 2 / 255]  # within the gate, but two shots
    out = list(denoised(iter(clip), [0, 0, 1, 1, 1]))
    assert len(out) == 5 and all(torch.equal(a, b) for a, b in zip(out, clip))
    mixed = list(denoised(iter(clip), [0] * 5))  # one shot: the same frames are averaged
    assert not torch.equal(mixed[1], clip[1])
    assert list(denoised(iter([]), [])) == []
    sizes = [grey, grey[:, :12], grey[:, :12]]  # a frame of another size starts afresh, like a new shot
    assert [tuple(f.shape) for f in denoised(iter(sizes), [0] * 3)] == [(3, 24, 32), (3, 12, 32), (3, 12, 32)]
    assert all(torch.equal(a, b) for a, b in zip(denoised(iter(clip), [0] * 5, radius=0), clip))
    with pytest.raises(ValueError, match="`radius` must be >= 0"):
        list(denoised(iter(clip), [0] * 5, radius=-1))


def test_steady_frames_levels_then_denoises_and_leaves_the_input_alone():
    scene = base((48, 64))
    gains = [1 + 0.25 * np.sin(2 * np.pi * k / 5) for k in range(10)]
    clip = (torch.stack([scene * g for g in gains]) + noisy(torch.zeros_like(scene), 10, seed=2)).clamp(0, 1)
    kept = clip.clone()
    out = steady_clip(clip)
    assert torch.equal(clip, kept) and out.shape == clip.shape
    levelled = level_exposure(clip)[0]
    by_hand = torch.stack(list(denoised(iter(levelled), [0] * 10)))  # one shot: levelling, then denoising
    assert torch.allclose(out, by_hand, atol=1e-6)
    assert torch.equal(torch.stack(list(steady_frames(iter(clip)))), out)

    def change(frames):
        return float((frames[1:] - frames[:-1]).abs().mean())

    assert change(out) < change(levelled) / 2  # consecutive frames agree far better once still areas are averaged


def test_predict_aligned_equals_the_whole_clip_path_chunk_by_chunk(tiny_backbone):
    """The node's path (predict_aligned: steadied a chunk at a time, no second copy of the clip) gives what the
    whole-clip path gives: align_sequence over the depth of steady_clip's frames, with them as the pictures."""
    from fiffdepth_core.method.predictor import PredictConfig, predict_depth
    from fiffdepth_core.method.temporal import align_sequence, predict_aligned

    gains = [1 + 0.25 * np.sin(2 * np.pi * k / 5) for k in range(9)]
    scene = base((48, 64))
    clip = (torch.stack([scene * g for g in gains]) + noisy(torch.zeros_like(scene), 9, seed=4)).clamp(0, 1)
    config = PredictConfig(processing_resolution=64)
    pictures = steady_clip(clip)
    with torch.inference_mode():
        expected, _ = align_sequence(predict_depth(tiny_backbone, pictures, config), stabilize=True, frames=pictures)
    calls = []

    def predict(frames):
        calls.append(len(frames))
        return predict_depth(tiny_backbone, frames, config)

    frame_bytes = clip[0].numel() * 4
    with torch.inference_mode():
        whole, steps = predict_aligned(predict, clip, stabilize=True, batch_size=2)
        chunked, _ = predict_aligned(predict, clip, stabilize=True, batch_size=2, chunk_bytes=3 * frame_bytes)
    assert calls == [9, 2, 2, 2, 2, 1]  # one call for the clip; then chunks of one batch (3 frames of bytes hold 2)
    assert len(steps) == 9 and not any(step.cut for step in steps[1:])
    assert float((whole - expected).abs().max()) < 1e-5 and float((chunked - expected).abs().max()) < 1e-5
    with pytest.raises(ValueError, match="`frames` must be a clip"):
        predict_aligned(predict, clip[:0])
