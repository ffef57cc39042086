"""Video in the CLI: streaming read/write round trips, the two-pass sequence path, aligned image sequences."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from fiffdepth_core.app.cli import main
from fiffdepth_core.app.outputs import MANIFEST
from fiffdepth_core.app.sequence import DepthCache, second_pass, sequence_quantiles, stream_pass
from fiffdepth_core.method.postprocess import controlnet_depth
from fiffdepth_core.method.predictor import PredictConfig, predict_depth
from fiffdepth_core.method.denoise import steady_clip
from fiffdepth_core.method.temporal import align_sequence
from fiffdepth_testkit.images import seeded_images

av = pytest.importorskip("av", reason="PyAV (the `video` extra) is not installed")

from fiffdepth_core.app.video import VideoWriter, probe_video, read_frames  # noqa: E402


def moving_frames(count: int, height: int, width: int) -> list[np.ndarray]:
    """Smooth content sliding one pixel per frame, uint8 [H,W,3]: easy on the codec, different every frame."""
    base = (seeded_images(1, height, width + count, seed=7)[0].permute(1, 2, 0).numpy() * 255).round()
    return [np.ascontiguousarray(base[:, k:k + width]).astype(np.uint8) for k in range(count)]


def write_clip(path, frames, fps) -> None:
    with VideoWriter(path, fps) as out:
        for frame in frames:
            out.write(frame)


@pytest.mark.parametrize("size,fps", [((48, 64), Fraction(25, 2)), ((35, 51), Fraction(30000, 1001))])
def test_streaming_round_trip_keeps_count_size_and_rate(tmp_path, size, fps):
    frames = moving_frames(11, *size)
    path = tmp_path / "clip.mp4"
    write_clip(path, frames, fps)
    info = probe_video(path)
    even = (size[0] + size[0] % 2, size[1] + size[1] % 2)  # odd sizes are padded: 4:2:0 needs even ones
    assert (info.height, info.width) == even and info.fps == fps and info.frames == 11
    decoded = list(read_frames(path))
    assert len(decoded) == 11
    for k, (original, back) in enumerate(zip(frames, decoded)):
        assert back.shape == (*even, 3) and back.dtype == np.uint8
        back = back[:size[0], :size[1]].astype(float)  # (the padding repeats the edge: tests/test_video_io.py)
        error = np.abs(back - original).mean()  # lossy (4:2:0 chroma, grain), but the same pictures
        assert error < 8.0 and error < 0.5 * np.abs(back - frames[(k + 5) % 11]).mean(), k

def test_writer_never_clobbers_and_leaves_no_partial_file(tmp_path):
    path = tmp_path / "keep.mp4"
    path.write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="keep.mp4 already exists"):
        VideoWriter(path, 24)
    target = tmp_path / "new.mp4"
    with pytest.raises(ValueError, match=r"frame 1 is 10x8, but the video is 16x8"):
        with VideoWriter(target, 24) as out:
            out.write(np.zeros((8, 16)))
            out.write(np.zeros((8, 10)))
    assert path.read_bytes() == b"mine" and list(tmp_path.iterdir()) == [path]


def test_depth_cache_and_sequence_quantiles(tmp_path):
    gen = torch.Generator().manual_seed(0)
    frames = [torch.rand((20, 30), generator=gen).numpy() ** (k + 1) for k in range(5)]
    cache = DepthCache(tmp_path / "d.f32")
    for frame in frames:
        cache.append(frame)
    assert len(cache) == 5 and all(np.array_equal(a, b) for a, b in zip(cache, frames))
    assert cache.low == min(f.min() for f in frames) and cache.high == max(f.max() for f in frames)
    got = sequence_quantiles(cache, scale=2.0, shift=-0.5).numpy()
    expected = np.quantile(np.concatenate([f.ravel() for f in frames]) * 2.0 - 0.5, [0.02, 0.98])
    assert np.abs(got - expected).max() <= 0.5 * (cache.high - cache.low) * 2.0 / 65536 + 1e-6
    with pytest.raises(ValueError, match="frame 5 is 31x20, but earlier frames were 30x20"):
        cache.append(np.zeros((20, 31), dtype=np.float32))
    cache.close()


@pytest.mark.parametrize("temporal", ["off", "align", "stabilize"])
def test_second_pass_applies_whole_sequence_bounds(tmp_path, temporal):
    gen = torch.Generator().manual_seed(1)
    frames = [torch.rand((16, 24), generator=gen) * (0.2 + 0.2 * k) + 0.1 * k for k in range(4)]  # ranges differ
    cache = DepthCache(tmp_path / "d.f32")
    for frame in frames:
        cache.append(frame.numpy())
    written = {}
    second_pass(cache, lambda i, depth, control: written.setdefault(i, (depth.clone(), control.clone())), temporal)
    stack = torch.stack(frames)
    depth = (stack - stack.min()) / (stack.max() - stack.min()) if temporal != "off" else stack
    control = controlnet_depth(depth, "whole_batch")
    assert sorted(written) == [0, 1, 2, 3]
    for k in range(4):
        assert torch.allclose(written[k][0], depth[k], atol=1e-6)
        assert torch.allclose(written[k][1], control[k], atol=1e-3)  # histogram quantiles: within a bin
    assert not torch.allclose(control, controlnet_depth(depth, "per_image"), atol=0.05)  # the test can tell
    cache.close()


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "walk.mp4"
    write_clip(path, moving_frames(6, 40, 56), Fraction(12))
    return path


def decoded_frames(clip) -> torch.Tensor:
    return torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in read_frames(clip)])  # [T,3,H,W]


def steady_pictures(clip) -> torch.Tensor:
    """What ``align`` and ``stabilize`` predict from and align with: the decoded frames, steadied (exposure levelled,
    still areas denoised: method/denoise.py)."""
    return steady_clip(decoded_frames(clip))


def expected_depths(backbone, clip, temporal: str = "off") -> torch.Tensor:
    pictures = decoded_frames(clip) if temporal == "off" else steady_pictures(clip)
    with torch.inference_mode():
        return predict_depth(backbone, pictures, PredictConfig(processing_resolution=64))  # [T,H,W]


@pytest.mark.parametrize("temporal", ["off", "align", "stabilize"])
def test_cli_video_writes_frames_and_controlnet_video(clip, tiny_checkpoint, tiny_backbone, tmp_path, temporal):
    out = tmp_path / "out"
    code = main(["predict", str(clip), "--checkpoint", str(tiny_checkpoint), "--processing-resolution", "64",
                 "--batch-size", "4", "--format", "npy", "png16", "color", "--temporal", temporal,
                 "--output-dir", str(out), "-q"])
    assert code == 0
    raw = expected_depths(tiny_backbone, clip, temporal)
    pictures = steady_pictures(clip)  # the CLI aligns with the pictures: cuts and the filter's flow come from them
    expected = raw if temporal == "off" else align_sequence(raw, stabilize=temporal == "stabilize",
                                                            frames=pictures)[0]
    saved = np.stack([np.load(out / "walk" / f"walk_{k:06d}.npy") for k in range(6)])
    assert not (out / "walk" / "walk_000006.npy").exists() and (out / "walk" / "walk_000005_depth16.png").is_file()
    assert np.abs(saved - expected.numpy()).max() <= 2e-4
    for name in ("walk_controlnet.mp4", "walk_color.mp4"):
        info = probe_video(out / name)
        assert (info.width, info.height, info.fps, info.frames) == (56, 40, Fraction(12), 6), name
    control = np.stack([f[..., 0] for f in read_frames(out / "walk_controlnet.mp4")]) / 255.0
    reference = controlnet_depth(expected, "whole_batch").numpy()  # whole-sequence bounds by default for video
    assert np.abs(control - reference).mean() < 5 / 255  # H.264 at CRF 16 on the random model's grainy depth
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != MANIFEST]  # the cache is gone


def test_cli_video_refuses_existing_outputs(clip, tmp_path, cli_error):
    out = tmp_path / "out"
    (out / "walk").mkdir(parents=True)
    (out / "walk" / "walk_000000.npy").write_bytes(b"keep")
    assert re.search(r"output already exists: .*walk/ \(not empty\) \(pass --overwrite",
                     cli_error(["predict", str(clip), "--checkpoint", str(tmp_path / "never-loaded"), "--output-dir",
                                str(out)]))
    assert (out / "walk" / "walk_000000.npy").read_bytes() == b"keep"


def test_cli_aligns_an_image_sequence(tiny_checkpoint, tiny_backbone, tmp_path):
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    for k, frame in enumerate(moving_frames(4, 40, 56)):
        Image.fromarray(frame).save(folder / f"f{k}.png")
    out = tmp_path / "out"
    assert main(["predict", str(folder), "--checkpoint", str(tiny_checkpoint), "--processing-resolution", "64",
                 "--temporal", "align", "--format", "npy", "--output-dir", str(out), "-q"]) == 0
    frames = torch.stack([torch.from_numpy(np.array(Image.open(folder / f"f{k}.png"))).permute(2, 0, 1).float()
                          / 255 for k in range(4)])
    with torch.inference_mode():
        expected = align_sequence(predict_depth(tiny_backbone, frames, PredictConfig(processing_resolution=64)),
                                  frames=frames)[0]
    saved = np.stack([np.load(out / f"f{k}.npy") for k in range(4)])
    assert np.abs(saved - expected.numpy()).max() <= 2e-4


def test_overwrite_with_a_shorter_clip_leaves_one_run_of_frames(clip, tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    args = ["--checkpoint", str(tiny_checkpoint), "--processing-resolution", "64", "--format", "npy", "exr",
            "--output-dir", str(out), "-q"]
    assert main(["predict", str(clip), *args]) == 0
    (out / "walk" / "walk_notes.txt").write_text("mine")  # the user's own file in the folder
    (out / "walk" / "walk_000009.npy").write_bytes(b"not ours to number")  # after a gap: not part of the run
    shorter = tmp_path / "short" / "walk.mp4"
    shorter.parent.mkdir()
    write_clip(shorter, moving_frames(3, 40, 56), Fraction(12))
    assert main(["predict", str(shorter), *args, "--overwrite"]) == 0
    names = sorted(p.name for p in (out / "walk").iterdir() if p.name != MANIFEST)
    assert names == ["walk_000000.exr", "walk_000000.npy", "walk_000001.exr", "walk_000001.npy", "walk_000002.exr",
                     "walk_000002.npy", "walk_000009.npy", "walk_notes.txt"]
    assert probe_video(out / "walk_controlnet.mp4").frames == 3


def test_a_clip_whose_depth_cache_would_not_fit_on_disk_is_refused_before_the_model_loads(clip, tmp_path,
                                                                                          monkeypatch, cli_error):
    import shutil

    import fiffdepth_core.app.video_cli as video_cli

    need = 6 * 40 * 56 * 4  # frames x width x height x float32
    seen = []

    def disk_usage(path):
        seen.append(Path(path))
        return shutil._ntuple_diskusage(10**12, 10**12 - need + 1, need - 1)

    monkeypatch.setattr(video_cli.shutil, "disk_usage", disk_usage)
    out = tmp_path / "new" / "out"  # not there yet: its nearest existing parent's disk is asked
    assert re.search(r"--output-dir: .*out: walk.mp4 needs 0.05 MB of free disk there for its "
                     r"depth cache \(6 frames of 56x40 float32.* but 0.05 MB is free",
                     cli_error(["predict", str(clip), "--checkpoint", str(tmp_path / "no-such-checkpoint"),
                                "--output-dir", str(out)]))
    assert seen == [tmp_path] and not (tmp_path / "new").exists()
    monkeypatch.setattr(video_cli.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(need, 0, need))
    video_cli.check_cache_space({"walk.mp4": (6, 56, 40)}, out)  # exactly enough: accepted


def window_reference(depths: np.ndarray, shots: list[int], window: int, aligned: bool):
    """Running-window bounds written out with numpy, from the definition in sequence.stream_pass: for each frame,
    the mean of per-frame min / max / 2nd / 98th percentiles over the frames within window // 2 of it, same shot."""
    half, out = window // 2, []
    stats = [(d.min(), d.max(), *np.quantile(d, [0.02, 0.98])) for d in depths]
    for t, depth in enumerate(depths):
        near = [stats[s] for s in range(len(depths)) if abs(s - t) <= half and shots[s] == shots[t]]
        low, high, q_low, q_high = np.mean(near, axis=0)
        if aligned:
            depth = np.clip((depth - low) / (high - low), 0, 1)
            q_low, q_high = (q_low - low) / (high - low), (q_high - low) / (high - low)
        control = 1 - np.clip((depth - q_low) / (q_high - q_low), 0, 1)
        out.append((depth, control))
    return out


@pytest.mark.parametrize("temporal", ["off", "align"])
def test_stream_pass_uses_running_window_bounds_and_holds_half_a_window(temporal):
    gen = torch.Generator().manual_seed(3)
    base = torch.rand((12, 16), generator=gen)
    clip = [base * (0.5 + 0.1 * k) + 0.05 * k + 0.01 * torch.rand((12, 16), generator=gen) for k in range(9)]
    written, predicted = {}, []

    def predict(batch):  # the "model": channel 0 of each frame
        predicted.extend([None] * len(batch))
        return batch[:, 0]

    def write(index, depth, control):  # window 5: written once the 2 frames after it are in (one batch of 2 late)
        assert len(predicted) <= index + 2 + 2, (index, len(predicted))
        written[index] = (depth.numpy().copy(), control.numpy().copy())

    count, aligner = stream_pass((c.expand(3, -1, -1) for c in clip), predict, 2, write, window=5, temporal=temporal,
                                 pictures=False)
    assert (count, aligner and aligner.cuts, sorted(written)) == (9, None if temporal == "off" else 0, list(range(9)))
    if temporal == "off":
        inputs = np.stack([c.numpy() for c in clip])
    else:
        inputs = align_sequence(torch.stack(clip), normalize=False)[0].numpy()
    for t, (depth, control) in enumerate(window_reference(inputs, [0] * 9, 5, temporal != "off")):
        assert np.abs(written[t][0] - depth).max() < 1e-5, t
        assert np.abs(written[t][1] - control).max() < 1e-4, t
    # the window matters: per-frame bounds give another map (clearly so for the raw frames' drifting range)
    per_frame = window_reference(inputs, [0] * 9, 1, temporal != "off")[0]
    assert np.abs(written[0][1] - per_frame[1]).max() > (0.01 if temporal == "off" else 1e-3)


def test_stream_pass_does_not_average_across_a_scene_cut():
    first = torch.from_numpy(unit_scene(5)).float()
    second = torch.from_numpy(unit_scene(6)).float() * 0.5 + 0.3
    clip = [first] * 3 + [second] * 3
    written = {}
    _, aligner = stream_pass((c.expand(3, -1, -1) for c in clip), lambda b: b[:, 0], 1,
                             lambda i, d, c: written.setdefault(i, d.numpy()), window=9, temporal="align")
    assert aligner.cuts == 1  # found in the pictures (here the depth maps themselves, as grey pictures)
    aligned = align_sequence(torch.stack(clip), normalize=False)[0].numpy()
    expected = window_reference(aligned, [0, 0, 0, 1, 1, 1], 9, True)
    for t in range(6):
        assert np.abs(written[t] - expected[t][0]).max() < 1e-5, t
    assert written[3].min() == 0.0 and written[3].max() == 1.0  # the new shot has its own range


def test_cli_stream_window_writes_the_clip_without_a_disk_cache(clip, tiny_checkpoint, tiny_backbone, tmp_path,
                                                                monkeypatch, cli_error):
    import fiffdepth_core.app.video_cli as video_cli

    def no_cache(*args, **kwargs):
        raise AssertionError("--stream-window must not make a disk cache")

    monkeypatch.setattr(video_cli, "DepthCache", no_cache)
    monkeypatch.setattr(video_cli.shutil, "disk_usage", lambda path: shutil_usage(0))  # no cache: no disk needed
    out = tmp_path / "out"
    assert main(["predict", str(clip), "--checkpoint", str(tiny_checkpoint), "--processing-resolution", "64",
                 "--temporal", "stabilize", "--stream-window", "4", "--format", "npy", "--output-dir", str(out),
                 "-q"]) == 0
    raw = expected_depths(tiny_backbone, clip, "stabilize")
    aligned, steps = align_sequence(raw, normalize=False, stabilize=True, frames=steady_pictures(clip))
    shots = np.cumsum([step.cut for step in steps]) - 1
    assert list(shots) == [0] * 6  # one shot: the pictures decide, not the random model's depth
    expected = window_reference(aligned.numpy(), list(shots), 4, True)
    saved = [np.load(out / "walk" / f"walk_{k:06d}.npy") for k in range(6)]
    assert max(np.abs(s - e[0]).max() for s, e in zip(saved, expected)) <= 2e-4
    assert probe_video(out / "walk_controlnet.mp4").frames == 6
    assert re.search(r"--stream-window: -1 \(a whole number >= 0\)",
                     cli_error(["predict", str(clip), "--checkpoint", str(tiny_checkpoint), "--stream-window", "-1"]))


def shutil_usage(free: int):
    import shutil

    return shutil._ntuple_diskusage(free, 0, free)


def unit_scene(scene: int) -> np.ndarray:
    from train.datasets.procedural_scene import render

    depth = render(24, 32, scene, 0)[1]
    depth = np.where(np.isfinite(depth), depth, 80.0)
    return (depth - depth.min()) / (depth.max() - depth.min())


def test_cli_video_defaults_to_steady_depth_and_whole_clip_controlnet_bounds(clip, tiny_checkpoint, tiny_backbone,
                                                                            tmp_path):
    still = tmp_path / "still.mp4"  # a still shot with sensor noise: the random model keeps it one shot
    gen = np.random.default_rng(0)
    base = moving_frames(1, 40, 56)[0].astype(np.int16)
    write_clip(still, [np.clip(base + gen.integers(-2, 3, base.shape), 0, 255).astype(np.uint8) for _ in range(6)],
               Fraction(12))
    out = tmp_path / "out"
    assert main(["predict", str(still), "--checkpoint", str(tiny_checkpoint), "--processing-resolution", "64",
                 "--format", "npy", "--output-dir", str(out), "-q"]) == 0
    raw = expected_depths(tiny_backbone, still, "stabilize")
    pictures = steady_pictures(still)  # the noise of this still shot is averaged out before the model
    assert not torch.equal(pictures, decoded_frames(still))
    steady, steps = align_sequence(raw, stabilize=True, frames=pictures)
    assert not any(step.cut for step in steps[1:])
    saved = np.stack([np.load(out / "still" / f"still_{k:06d}.npy") for k in range(6)])
    assert np.abs(saved - steady.numpy()).max() <= 2e-4
    assert np.abs(saved - align_sequence(raw, frames=pictures)[0].numpy()).max() > 1e-3  # stabilize, not align
    control = np.stack([f[..., 0] for f in read_frames(out / "still_controlnet.mp4")]) / 255.0
    whole = controlnet_depth(steady, "whole_batch").numpy()
    per_image = controlnet_depth(steady, "per_image").numpy()
    assert np.abs(control - whole).mean() < np.abs(control - per_image).mean()


def write_rotated_clip(path, frames, rotation: int) -> None:
    """A clip whose display matrix asks players to turn it ``rotation`` degrees counter-clockwise (a phone video)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=12)
        if not hasattr(stream, "set_display_rotation"):
            pytest.skip(f"PyAV {av.__version__} cannot write a display rotation")
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.set_display_rotation(rotation)
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotated_phone_video_is_read_upright_like_ffmpeg_shows_it(tmp_path, rotation):
    stored = np.zeros((32, 64, 3), dtype=np.uint8)
    stored[:8, :16] = 255  # a bright block in the stored frame's top-left corner
    path = tmp_path / "phone.mp4"
    write_rotated_clip(path, [stored] * 3, rotation)
    info = probe_video(path)
    frames = list(read_frames(path))
    # counter-clockwise by `rotation`, written out by hand: where the stored top-left block ends up
    if rotation == 90:  # turned left: the top-left corner goes to the bottom-left
        expected_size, corner = (32, 64), (slice(48, 64), slice(0, 8))
    elif rotation == -90:  # turned right: top-left goes to top-right
        expected_size, corner = (32, 64), (slice(0, 16), slice(24, 32))
    else:  # upside down: top-left goes to bottom-right
        expected_size, corner = (64, 32), (slice(24, 32), slice(48, 64))
    assert (info.width, info.height, info.rotation) == (*expected_size, rotation)
    assert len(frames) == 3 and frames[0].shape == (expected_size[1], expected_size[0], 3)
    assert frames[0][corner].mean() > 200 and frames[0].mean() < 80  # the block, and only there


def test_cli_writes_a_rotated_video_upright(tmp_path, tiny_checkpoint):
    path = tmp_path / "phone.mp4"
    write_rotated_clip(path, moving_frames(3, 40, 56), -90)
    out = tmp_path / "out"
    assert main(["predict", str(path), "--checkpoint", str(tiny_checkpoint), "--processing-resolution", "64",
                 "--format", "npy", "--output-dir", str(out), "-q"]) == 0
    assert np.load(out / "phone" / "phone_000000.npy").shape == (56, 40)  # portrait, as shown
    info = probe_video(out / "phone_controlnet.mp4")
    assert (info.width, info.height, info.rotation, info.frames) == (40, 56, 0, 3)


def test_video_outputs_are_logged_so_a_later_run_does_not_take_them_as_inputs(clip, tiny_checkpoint, tmp_path,
                                                                               cli_error):
    out = tmp_path / "out"
    args = ["--checkpoint", str(tiny_checkpoint), "--processing-resolution", "64", "--format", "npy", "png16"]
    assert main(["predict", str(clip), *args, "--output-dir", str(out), "-q"]) == 0
    for folder in (out, out / "walk"):  # the ControlNet video, and the depth frames
        assert re.search("no images or videos found",
                         cli_error(["predict", str(folder), *args, "--output-dir", str(tmp_path / "again"), "-q"]))


def test_overwrite_never_replaces_an_input_video(clip, tmp_path, cli_error):
    folder = tmp_path / "shots"
    folder.mkdir()
    (folder / "walk.mp4").write_bytes(clip.read_bytes())
    (folder / "walk_controlnet.mp4").write_bytes(clip.read_bytes())  # the user's own file, also an input
    before = (folder / "walk_controlnet.mp4").read_bytes()
    assert re.search(r"walk_controlnet.mp4 output of .*walk.mp4 would replace an input of this run "
                     r"\(another --output-dir: inputs are never overwritten, even with --overwrite\)",
                     cli_error(["predict", str(folder), "--checkpoint", str(tmp_path / "never-loaded"),
                                "--output-dir", str(folder), "--overwrite"]))
    assert (folder / "walk_controlnet.mp4").read_bytes() == before


def test_skip_existing_skips_finished_videos_and_redoes_one_cut_short(clip, tiny_checkpoint, tmp_path, cli_error):
    out = tmp_path / "out"
    args = ["--checkpoint", str(tiny_checkpoint), "--processing-resolution", "64", "--format", "npy",
            "--output-dir", str(out), "-q"]
    assert main(["predict", str(clip), *args]) == 0
    finished = (out / "walk_controlnet.mp4").stat().st_mtime_ns
    other = tmp_path / "b" / "run.mp4"
    other.parent.mkdir()
    write_clip(other, moving_frames(3, 40, 56), Fraction(12))
    assert main(["predict", str(clip), str(other), *args, "--skip-existing"]) == 0
    assert (out / "walk_controlnet.mp4").stat().st_mtime_ns == finished  # walk was done: not redone
    assert probe_video(out / "run_controlnet.mp4").frames == 3
    (out / "run_controlnet.mp4").unlink()  # as if "run" had been cut short before its videos appeared
    assert main(["predict", str(other), *args, "--skip-existing"]) == 0  # its own frame files are replaced
    assert probe_video(out / "run_controlnet.mp4").frames == 3
    (out / "run" / "run_000001.npy").write_bytes(b"the user's")  # ...but not a file someone else put there
    (out / "run_controlnet.mp4").unlink()
    assert re.search(r"run/ \(not empty\)",
                     cli_error(["predict", str(other), *args, "--skip-existing"]))


def test_on_error_skip_goes_on_past_a_video_that_fails_to_decode(clip, tiny_checkpoint, tmp_path, monkeypatch):
    import fiffdepth_core.app.video_cli as video_cli

    broken = tmp_path / "b" / "broken.mp4"
    broken.parent.mkdir()
    broken.write_bytes(clip.read_bytes())
    real = video_cli.read_timed_frames

    def read_timed_frames(path):  # decodes a few frames, then hits damage the header check could not see
        if Path(path).name == "broken.mp4":
            frames = real(path)
            yield next(frames)
            raise ValueError(f"cannot decode video {path}: Invalid data found when processing input")
        yield from real(path)

    monkeypatch.setattr(video_cli, "read_timed_frames", read_timed_frames)
    out = tmp_path / "out"
    args = ["--checkpoint", str(tiny_checkpoint), "--processing-resolution", "64", "--output-dir", str(out), "-q"]
    assert main(["predict", str(broken), str(clip), *args]) == 2  # stop (the default): the run ends there
    assert not (out / "walk_controlnet.mp4").exists()
    assert main(["predict", str(broken), str(clip), *args, "--on-error", "skip"]) == 0
    assert probe_video(out / "walk_controlnet.mp4").frames == 6 and not (out / "broken_controlnet.mp4").exists()
    assert "broken.mp4\tcannot decode video" in (out / "fiffdepth_skipped.txt").read_text()


def test_sigterm_ends_a_run_like_ctrl_c():
    """In a child process (a broken handler would kill the test runner itself)."""
    import subprocess
    import sys

    code = ("import os, signal, time\n"
            "from fiffdepth_core.app.cli import _terminate_as_interrupt\n"
            "before = signal.getsignal(signal.SIGTERM)\n"
            "try:\n"
            "    with _terminate_as_interrupt():\n"
            "        os.kill(os.getpid(), signal.SIGTERM)\n"
            "        time.sleep(5)\n"
            "except KeyboardInterrupt:\n"
            "    print('interrupted, handler restored:', signal.getsignal(signal.SIGTERM) == before)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.stdout.strip() == "interrupted, handler restored: True", (result.returncode, result.stderr)


def test_outputs_that_cannot_work_are_refused_before_the_model_loads(clip, tmp_path, cli_error):
    from PIL import Image

    out = tmp_path / "out"
    out.mkdir()
    (out / "walk").write_text("notes")  # a file where the frames folder goes
    assert re.search(r"out/walk is a file, but .*walk.mp4's depth frames go in a folder",
                     cli_error(["predict", str(clip), "--checkpoint", str(tmp_path / "never-loaded"), "--output-dir",
                                str(out)]))
    frames = tmp_path / "frames"
    frames.mkdir()
    for k, size in enumerate([(56, 40), (56, 40), (48, 40)]):
        Image.new("RGB", size).save(frames / f"f{k}.png")
    assert re.search(r"--temporal stabilize: .*f2.png is 48x40 but .*f0.png is 56x40 \(the frames "
                     r"of a sequence share one size\)",
                     cli_error(["predict", str(frames), "--temporal", "stabilize", "--checkpoint",
                                str(tmp_path / "never-loaded"), "--output-dir", str(tmp_path / "o2")]))


def test_numbered_frames_are_taken_in_natural_order(tmp_path):
    from PIL import Image

    from fiffdepth_core.app.outputs import list_inputs

    for k in (1, 2, 10, 11, 3):
        Image.new("RGB", (4, 4)).save(tmp_path / f"frame{k}.png")
    assert [p.name for p in list_inputs([tmp_path])] == [f"frame{k}.png" for k in (1, 2, 3, 10, 11)]


def test_names_that_differ_only_in_case_collide(clip, tmp_path, cli_error):
    from PIL import Image

    other = tmp_path / "b" / "WALK.png"
    other.parent.mkdir()
    Image.new("RGB", (8, 8)).save(other)
    assert re.search("two inputs share the name 'walk'",
                     cli_error(["predict", str(other), str(clip), "--checkpoint", str(tmp_path / "never-loaded"),
                                "--output-dir", str(tmp_path / "out")]))


def test_the_disk_check_counts_frames_from_the_duration_when_none_are_declared(tmp_path, monkeypatch, cli_error):
    import shutil

    import fiffdepth_core.app.video_cli as video_cli

    clip = tmp_path / "walk.mkv"  # Matroska declares no frame count
    write_clip(clip, moving_frames(12, 40, 56), Fraction(12))
    info = probe_video(clip)
    assert info.frames is None and info.estimated_frames() == 12
    need = 12 * 56 * 40 * 4
    monkeypatch.setattr(video_cli.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(need, 0, need - 1))
    assert re.search(r"walk.mkv needs 0.11 MB of free disk there for its depth cache \(12 frames",
                     cli_error(["predict", str(clip), "--checkpoint", str(tmp_path / "never-loaded"), "--output-dir",
                                str(tmp_path / "out")]))
