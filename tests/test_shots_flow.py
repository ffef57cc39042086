"""Scene cuts from the pictures (fiffdepth_core.method.shots), optical flow (flow) and the flow-guided filter
(temporal_flow): checked against hand-computed values, known shifts and known depth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fiffdepth_core.method import flow as flow_module
from fiffdepth_core.method.flow import consistent, lucas_kanade, pair_flows, prepare, resize_flow, warp
from fiffdepth_core.method.shots import ShotDetector, change, detect_cuts, frame_rgb, signature
from fiffdepth_core.method.temporal_flow import FlowFilter
from train.datasets.procedural_scene import render, render_path


def clip(scene: int, frames: int, step: float = 0.04, turn: float = 0.5, size=(72, 96)) -> list[torch.Tensor]:
    return [torch.from_numpy(rgb) for rgb, _ in render_path(*size, scene, 2024, frames, step=step, turn=turn)]


def test_signature_is_the_rank_map_of_the_area_averaged_frame():
    frame = torch.zeros(3, 4, 6)
    frame[0] = torch.arange(24, dtype=torch.float32).view(4, 6) / 24  # every value distinct
    frame[1, :, 3:] = 0.5  # two values, twelve pixels each
    sig = signature(frame)  # small enough to be its own signature
    assert np.allclose(sig[0], np.arange(24).reshape(4, 6) / 23)
    assert np.allclose(sig[1], np.where(np.arange(6) < 3, 5.5, 17.5)[None].repeat(4, 0) / 23)  # ties: mean rank
    assert np.allclose(sig[2], 0.5)  # one value: no order at all
    big = torch.rand(3, 96, 144, generator=torch.Generator().manual_seed(0))
    by_hand = big.reshape(3, 32, 3, 48, 3).mean(dim=(2, 4)).double().numpy()  # 3x3 blocks: the 48-px long edge
    ranks = np.argsort(np.argsort(by_hand.reshape(3, -1), axis=1), axis=1).reshape(3, 32, 48) / (32 * 48 - 1)
    assert np.allclose(signature(big), ranks)
    assert np.array_equal(frame_rgb(np.full((4, 6, 3), 255, np.uint8)), torch.ones(3, 4, 6))
    with pytest.raises(ValueError, match=r"a frame must be \[C,H,W\].*got shape \(5, 4, 6\)"):
        frame_rgb(torch.zeros(5, 4, 6))


def test_change_takes_the_best_of_small_shifts():
    gen = np.random.default_rng(1)
    a = gen.random((3, 10, 12))
    shifted = np.roll(a, 1, axis=2)
    assert change(a, a) == 0.0
    assert change(a, shifted) == 0.0  # one signature pixel of pan is no change
    assert change(a, shifted, max_shift=0) == pytest.approx(np.abs(a - shifted).mean())
    assert change(a, np.roll(a, 3, axis=2)) > 0.2  # unrelated content scores about 1/3
    assert change(a, a[:, :8]) == 1.0  # the picture size changed


def test_exposure_and_motion_are_not_cuts_but_a_splice_is_found_at_its_frame():
    camera = clip(0, 8)
    pumped = [frame * (1 + 0.25 * np.sin(2 * np.pi * k / 5)) for k, frame in enumerate(clip(1, 8, 0.0, 0.0))]
    pumped = [f.clamp(0, 1) ** (1.0 + 0.1 * np.cos(k)) for k, f in enumerate(pumped)]  # gain and gamma pump
    assert detect_cuts(camera) == [] and detect_cuts(pumped) == []
    assert detect_cuts(camera + pumped) == [8]
    assert detect_cuts(pumped + camera + clip(2, 4)) == [8, 16]
    # A depth-style rule would not hold here: the exposure pumping changes every pixel's value by up to 25 %.
    assert np.abs(pumped[1].numpy() - pumped[0].numpy()).mean() > 0.05


def test_a_shot_of_steady_fast_motion_is_not_cut_frame_after_frame():
    fast = clip(6, 8, step=0.2, turn=3.0)  # changes of 0.14-0.25 between frames: above the threshold
    detector = ShotDetector()
    cuts = [detector.update(frame) for frame in fast]
    assert cuts[0] and not any(cuts[1:]), [round(float(c), 3) for c in detector.recent]
    with pytest.raises(ValueError, match=r"`threshold` must be in \(0, 1\), got 0"):
        ShotDetector(threshold=0)


def smooth_image(height: int, width: int, seed: int) -> torch.Tensor:
    image = torch.nn.functional.avg_pool2d(torch.rand(1, 1, height, width, generator=torch.Generator()
                                                      .manual_seed(seed)), 7, 1, 3)[0, 0]
    return (image - image.min()) / (image.max() - image.min())


@pytest.mark.parametrize("backend", ["torch", "opencv"])
def test_flow_finds_a_known_shift_both_ways(backend):
    if backend == "opencv":
        pytest.importorskip("cv2", reason="OpenCV is not installed")
    image = smooth_image(120, 160, seed=2)
    shift = torch.zeros(2, 120, 160)
    shift[0], shift[1] = 2.5, -1.25
    moved, _ = warp(image[None], shift)  # moved(x) = image(x + shift): the content moved by -shift
    previous, current = (prepare(x.expand(3, -1, -1), edge=160) for x in (image, moved[0]))
    backward, forward = pair_flows(previous, current, backend)
    inner = (slice(None), slice(20, -20), slice(20, -20))
    assert torch.allclose(backward[inner].mean((1, 2)), torch.tensor([2.5, -1.25]), atol=0.15)
    assert torch.allclose(forward[inner].mean((1, 2)), torch.tensor([-2.5, 1.25]), atol=0.15)
    assert consistent(backward, forward)[20:-20, 20:-20].float().mean() > 0.95


def test_lucas_kanade_recovers_a_shift_larger_than_its_window_step():
    image = smooth_image(120, 160, seed=3)
    shift = torch.zeros(2, 120, 160)
    shift[0] = 4.0
    moved, _ = warp(image[None], shift)
    flow = lucas_kanade(moved[0], image)
    assert (flow[0, 20:-20, 20:-20] - 4.0).abs().median() < 0.1 and flow[1, 20:-20, 20:-20].abs().median() < 0.1


def test_warp_resize_and_consistency_by_hand():
    maps = torch.arange(12, dtype=torch.float32).view(1, 3, 4)
    flow = torch.zeros(2, 3, 4)
    flow[0] = 1.0  # fetch from one pixel to the right
    out, inside = warp(maps, flow)
    assert torch.allclose(out[0, :, :3], maps[0, :, 1:], atol=1e-5) and inside[:, :3].all() and not inside[:, 3].any()
    half = torch.full((2, 3, 4), 0.5)
    assert torch.allclose(warp(maps, half)[0][0, :2, :3], (maps[0, :2, :3] + maps[0, :2, 1:] + maps[0, 1:, :3]
                                                          + maps[0, 1:, 1:]) / 4)  # bilinear
    big = resize_flow(torch.ones(2, 3, 4), (6, 12))
    assert big.shape == (2, 6, 12) and torch.allclose(big[0], torch.full((6, 12), 3.0)) and \
        torch.allclose(big[1], torch.full((6, 12), 2.0))
    back = torch.zeros(2, 8, 8)
    back[0] = 2.0
    fore = torch.zeros(2, 8, 8)
    fore[0] = -2.0
    assert consistent(back, fore)[:, :6].all()
    fore[0, :, 3:5] = 2.0  # where the points landed, the forward flow disagrees: occluded
    assert not consistent(back, fore)[:, 1:3].any() and consistent(back, fore)[:, 5].all()


def test_prepare_equalises_away_a_global_exposure_change():
    rgb = torch.from_numpy(render(72, 96, 4, 0)[0])
    darker = (rgb * 0.7) ** 1.2
    assert (prepare(rgb).float() - prepare(darker).float()).abs().mean() < 3.0  # of 255
    assert (rgb - darker).abs().mean() * 255 > 20


def still_clip(frames: int, noise: float, seed: int, object_at: int | None = None):
    """A still shot (pictures and depth) with per-frame depth noise; optionally a ball appearing at ``object_at``."""
    gen = torch.Generator().manual_seed(seed)
    rgb, depth = render(48, 64, 2, 0)
    depth = np.where(np.isfinite(depth), depth, 30.0) / 30.0
    pictures, depths = [], []
    for k in range(frames):
        d, picture = torch.from_numpy(depth).float(), torch.from_numpy(rgb)
        if object_at is not None and k >= object_at:
            d, picture = d.clone(), picture.clone()
            d[10:22, 20:36] = 0.05
            picture[:, 10:22, 20:36] = torch.tensor([0.9, 0.1, 0.1]).view(3, 1, 1)
        pictures.append(picture)
        depths.append(d + noise * torch.randn(d.shape, generator=gen))
    return pictures, depths


def test_flow_filter_is_the_running_mean_on_a_still_shot():
    pictures, depths = still_clip(6, 0.01, seed=5)
    gen = torch.Generator().manual_seed(16)  # sensor noise in the pictures: the flow finds motion that is not there
    pictures = [(p + 0.03 * torch.randn(p.shape, generator=gen)).clamp(0, 1) for p in pictures]
    filt = FlowFilter(process_noise=1e-9)
    out = [filt.update(d, p) for d, p in zip(depths, pictures)]
    running = torch.cumsum(torch.stack(depths), 0) / torch.arange(1, 7).view(-1, 1, 1)
    # the flow of a still shot is ~0, the same pixel's history wins, no pixel is gated: the plain running mean
    assert (torch.stack(out) - running).abs().mean() < 1e-3
    assert (out[-1] - running[-1]).abs().max() < 0.02


def test_flow_filter_passes_an_appearing_object_at_once_and_averages_the_rest():
    pictures, depths = still_clip(8, 0.01, seed=6, object_at=4)
    filt = FlowFilter()
    out = [filt.update(d, p) for d, p in zip(depths, pictures)]
    assert (out[4][10:22, 20:36] - 0.05).abs().mean() < 0.02  # the new surface, in the frame it appears
    still = (out[7] - out[6])[30:, :].abs().mean()
    assert still < 0.4 * (depths[7] - depths[6])[30:, :].abs().mean()  # the rest keeps being averaged


def test_flow_filter_follows_a_pan_where_a_same_pixel_history_would_lag():
    """A camera panning 2 px per frame over a depth edge: history fetched along the flow has no ghost."""
    rgb, depth = render(64, 120, 5, 0)
    depth = torch.from_numpy(np.where(np.isfinite(depth), depth, 30.0) / 30.0).float()
    rgb, gen = torch.from_numpy(rgb), torch.Generator().manual_seed(8)
    truth = [depth[:, 2 * k:2 * k + 80] for k in range(8)]
    frames = [(rgb[:, :, 2 * k:2 * k + 80], t + 0.005 * torch.randn(t.shape, generator=gen)) for k, t in enumerate(truth)]
    filt = FlowFilter()
    lag_free = float(torch.stack([(filt.update(d, p) - t).abs().mean() for (p, d), t in zip(frames, truth)])[4:].mean())
    from fiffdepth_core.method.temporal import TemporalFilter

    same_pixel = TemporalFilter(history_weight=0.8, noise_sigmas=100.0)  # the same averaging, without the flow
    ghost = float(torch.stack([(same_pixel.update(d) - t).abs().mean() for (_, d), t in zip(frames, truth)])[4:].mean())
    assert lag_free < 0.5 * ghost and lag_free < 0.005, (lag_free, ghost)  # and below the noise it was given


def test_flow_filter_settings_and_sizes_are_checked(monkeypatch):
    with pytest.raises(ValueError, match=r"`process_noise` must be in \(0.0, 100\], got 0"):
        FlowFilter(process_noise=0)
    with pytest.raises(ValueError, match=r"`flow_backend` must be one of auto, opencv, torch, got 'dis'"):
        FlowFilter(backend="dis")
    monkeypatch.setattr(flow_module, "_cv2", lambda: None)  # OpenCV absent: auto falls back to torch
    assert FlowFilter().backend == "torch"
    with pytest.raises(ImportError, match="pip install opencv-python-headless"):
        FlowFilter(backend="opencv")
    filt = FlowFilter()
    filt.update(torch.zeros(8, 8), torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match=r"frame is \(8, 9\), but earlier frames were \(8, 8\)"):
        filt.update(torch.zeros(8, 9), torch.rand(3, 8, 8))


def test_flow_filter_follows_a_slope_that_a_same_pixel_history_would_drag():
    """A textured picture panning 2 px per frame over a depth ramp: each pixel's depth changes by less than the
    gate lets through, so only following the flow keeps the output on the ramp."""
    rgb = torch.from_numpy(render(48, 120, 5, 0)[0])
    ramp = torch.linspace(0.0, 1.0, 120).expand(48, -1)
    gen = torch.Generator().manual_seed(15)
    truth = [ramp[:, 2 * k:2 * k + 80] for k in range(10)]
    filt = FlowFilter()
    out = [filt.update(t + 0.01 * torch.randn(t.shape, generator=gen), rgb[:, :, 2 * k:2 * k + 80])
           for k, t in enumerate(truth)]
    error = float(torch.stack([(o - t)[:, 10:-10].abs().mean() for o, t in zip(out[5:], truth[5:])]).mean())
    assert error < 0.006, error  # a same-pixel history lags by several frames' worth of 0.017


def test_flow_filter_drops_the_history_of_uncovered_points():
    """A square slides right over a still background, both at nearly one depth (within any gate): where it
    uncovers the background, the square's old depth is not carried on (the flow there comes from the background or
    fails its round trip; the round trip itself is checked by hand in test_warp_resize_and_consistency_by_hand)."""
    rgb, _ = render(48, 96, 1, 0)
    rgb = torch.from_numpy(rgb)
    background = torch.full((48, 96), 0.55)
    filt = FlowFilter(noise_sigmas=50.0, picture_gate=1.0)  # no gate to speak of: the occlusion test alone
    for k in range(7):
        picture, depth = rgb.clone(), background.clone()
        picture[:, 14:34, 10 + 3 * k:30 + 3 * k] = torch.tensor([0.9, 0.1, 0.1]).view(3, 1, 1)
        depth[14:34, 10 + 3 * k:30 + 3 * k] = 0.5
        out = filt.update(depth, picture)
    uncovered = out[16:32, 10 + 3 * 6 - 3:10 + 3 * 6]  # background again for the last frame only
    assert (uncovered - 0.55).abs().mean() < 0.01, float((uncovered - 0.55).abs().mean())
