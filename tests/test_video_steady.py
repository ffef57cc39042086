"""Video depth that stays steady when the model is not: the pictures decide scene cuts in the CLI (a real splice is
found at its frame, exposure pumping is not a cut), and the random tiny model's exposure-pumping clip is aligned
without cuts and stabilized well below ``off``."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from fiffdepth_core.app.cli import main
from fiffdepth_core.method.denoise import steady_clip
from fiffdepth_core.method.predictor import PredictConfig, predict_depth
from fiffdepth_core.method.temporal import align_sequence
from train.datasets.procedural_scene import render

av = pytest.importorskip("av", reason="PyAV (the `video` extra) is not installed")

from fiffdepth_core.app.video import VideoWriter, read_frames  # noqa: E402


def pumped(scene: int, frames: int, size=(48, 64), amount: float = 0.25) -> list[np.ndarray]:
    """A still shot whose exposure pumps by +-``amount`` (auto-exposure hunting), uint8 ``[H,W,3]``."""
    rgb = render(*size, scene, 0)[0].transpose(1, 2, 0)
    return [(np.clip(rgb * (1 + amount * np.sin(2 * np.pi * k / 5)), 0, 1) * 255).round().astype(np.uint8)
            for k in range(frames)]


def write(path, frames, fps=12) -> None:
    with VideoWriter(path, fps) as out:
        for frame in frames:
            out.write(frame)


def decoded(path) -> torch.Tensor:
    return torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in read_frames(path)])


def test_cli_finds_a_spliced_cut_at_its_frame_and_none_in_exposure_pumping(tmp_path, tiny_checkpoint,
                                                                        tiny_backbone, caplog):
    clip = tmp_path / "splice.mp4"
    write(clip, pumped(5, 6) + pumped(6, 5))
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        assert main(["predict", str(clip), "--checkpoint", str(tiny_checkpoint), "--processing-resolution", "64",
                     "--temporal", "align", "--format", "npy", "--output-dir", str(out)]) == 0
    messages = [r.getMessage() for r in caplog.records]
    assert "scene cut at frame 7 (the picture changes" in " ".join(messages)  # frames counted from 1 in the log
    assert "splice.mp4: 1 scene cut(s) in the picture; alignment restarted at each" in messages
    as_decoded = decoded(clip)
    pictures = steady_clip(as_decoded)  # what the temporal modes predict from (method/denoise.py)
    with torch.inference_mode():
        raw = predict_depth(tiny_backbone, pictures, PredictConfig(processing_resolution=64))
        unlevelled = predict_depth(tiny_backbone, as_decoded, PredictConfig(processing_resolution=64))
    expected, steps = align_sequence(raw, frames=pictures)
    assert [k for k, step in enumerate(steps) if step.cut] == [0, 6]
    saved = np.stack([np.load(out / "splice" / f"splice_{k:06d}.npy") for k in range(11)])
    assert np.abs(saved - expected.numpy()).max() <= 2e-4
    _, depth_only = align_sequence(unlevelled)  # the depth alone calls the random model's pumping frames cuts
    assert sum(step.cut for step in depth_only[1:]) > 1


def test_the_random_models_exposure_pumping_clip_is_steadied_without_a_cut(tiny_backbone):
    """The issue's case: a still shot, exposure +-25 %, the random tiny model (whose depth answers each exposure
    anew), the aligner and filter alone on the frames as they are. No cut; stabilize cuts the mean frame-to-frame
    change of the depth by more than 4x (4.8x: 0.0724 -> 0.0151; the CLI also steadies the pictures first: the
    test below); align keeps each frame's depth range (a least-squares fit would flatten it towards a constant,
    which would fake a steady output)."""
    pictures = torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in pumped(3, 16, (96, 128))])
    with torch.inference_mode():
        raw = predict_depth(tiny_backbone, pictures, PredictConfig(processing_resolution=64))  # [T,H,W]

    def change(depth):
        return float((depth[1:] - depth[:-1]).abs().mean())

    off = change(raw)
    aligned, steps = align_sequence(raw, frames=pictures)
    stabilized, stab_steps = align_sequence(raw, frames=pictures, stabilize=True)
    assert not any(step.cut for step in steps[1:] + stab_steps[1:])
    assert change(stabilized) < off / 4, (change(stabilized), off)
    spans = [float(np.subtract(*np.quantile(frame.numpy(), [0.98, 0.02]))) for frame in aligned]
    raw_spans = [float(np.subtract(*np.quantile(frame.numpy(), [0.98, 0.02]))) for frame in raw]
    scale = spans[0] / raw_spans[0]  # the clip's [0,1] normalisation
    assert min(s / (r * scale) for s, r in zip(spans, raw_spans)) > 0.8


def test_the_issues_pumping_clip_through_h264_is_steadied_5x_by_align_and_by_stabilize(tmp_path, tiny_checkpoint,
                                                                                       caplog):
    """The issue's done-when, end to end: a still shot pumping by +-25 %, written as H.264 (the writer's default
    quality, crf 16) and run through the CLI with the random tiny model. Measured: mean frame-to-frame change of the
    saved depth 0.0736 off, 0.0116 align (6.3x), 0.0022 stabilize (33x); without the still-area denoising align was
    0.0346 (2.1x: the codec's noise, amplified by levelling the dark frames, moves this model's depth by more than a
    scale and shift), without the exposure levelling 0.0736 (1.0x). No scene cut is logged."""
    clip = tmp_path / "pumping.mp4"
    write(clip, pumped(3, 16, (96, 128)))
    change = {}
    for mode in ("off", "align", "stabilize"):
        out = tmp_path / mode
        caplog.clear()
        with caplog.at_level(logging.INFO):
            assert main(["predict", str(clip), "--checkpoint", str(tiny_checkpoint), "--processing-resolution", "64",
                         "--temporal", mode, "--format", "npy", "--output-dir", str(out)]) == 0
        assert not [r for r in caplog.records if "scene cut" in r.getMessage()], mode
        depth = np.stack([np.load(out / "pumping" / f"pumping_{k:06d}.npy") for k in range(16)])
        change[mode] = float(np.abs(np.diff(depth, axis=0)).mean())
    assert change["align"] < change["off"] / 5 and change["stabilize"] < change["off"] / 5, change
