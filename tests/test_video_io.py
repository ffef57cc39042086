"""Video I/O robustness (fiffdepth_core.app.video): damaged and truncated files, a picture size that changes, cover art,
output file modes and no-clobber publishing, the MPEG-4 fallback encoder, container extensions.

Every clip is built here with PyAV (CI has no ffmpeg binary), tiny and short.
"""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av", reason="PyAV (the `video` extra) is not installed")

from fiffdepth_core.app import video as video_module  # noqa: E402
from fiffdepth_core.app.video import VideoWriter, is_video, list_videos, probe_video, read_frames  # noqa: E402

H264 = "libx264" if "libx264" in av.codecs_available else None
# the damage below (an impossible NAL length) and the exact comparisons are H.264's; PyAV's wheels include libx264
needs_h264 = pytest.mark.skipif(H264 is None, reason="this FFmpeg build has no libx264")


def pictures(count: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth, different-every-frame uint8 [H,W,3] pictures (a moving gradient pattern)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(seed)
    phases = rng.uniform(0, 2 * np.pi, size=3)
    return [np.stack([127.5 + 100 * np.sin(0.2 * x + 0.13 * y + 0.4 * k + phases[c]) for c in range(3)], axis=2)
            .round().astype(np.uint8) for k in range(count)]


def encode(path: Path, frames: list[np.ndarray], fps: int = 12, container_format: str | None = None,
           faststart: bool = False) -> None:
    """``frames`` as an intra-only video (every packet decodes on its own), H.264 where available, else MPEG-2."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format=container_format, options=options) as out:
        if H264:
            stream = out.add_stream(H264, rate=fps)
            stream.options = {"x264-params": "keyint=1:min-keyint=1:scenecut=0", "bframes": "0", "crf": "20"}
        else:
            stream = out.add_stream("mpeg2video", rate=fps)
            stream.gop_size = 1
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def packets(path: Path) -> list[tuple[int, int]]:
    """(file offset, size) of each video packet, in file order."""
    with av.open(str(path)) as container:
        found = [(int(p.pos), int(p.size)) for p in container.demux(video=0) if p.size and p.pos is not None]
    return sorted(found)


def clean_decode(path: Path) -> list[np.ndarray]:
    """Every frame, decoded straight with PyAV: the reference the reader is compared against."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "fiffdepth_core.app.video" and r.levelno == logging.WARNING]


# 1. damaged and truncated input --------------------------------------------------------------------------------


def damage(path: Path, index: int) -> None:
    """Overwrite the first bytes of packet ``index`` (in file order) so the decoder rejects it (an H.264 NAL length
    of 0xFFFFFFFF; for MPEG-2 a garbage start)."""
    offset, size = packets(path)[index]
    data = bytearray(path.read_bytes())
    data[offset:offset + min(size, 8)] = b"\xff" * min(size, 8)
    path.write_bytes(bytes(data))


@needs_h264
def test_one_damaged_packet_is_skipped_not_fatal(tmp_path, caplog):
    clean, broken = tmp_path / "clean.mp4", tmp_path / "broken.mp4"
    encode(clean, pictures(20, 48, 64))
    broken.write_bytes(clean.read_bytes())
    damage(broken, 10)
    reference = clean_decode(clean)
    assert len(reference) == 20
    with caplog.at_level(logging.WARNING, logger="fiffdepth_core.app.video"):
        decoded = list(read_frames(broken))
    assert len(decoded) >= 18
    # intra-only: every other frame is exactly the clean decode of the same packet; the damaged one is gone
    assert len(decoded) == 19
    for got, want in zip(decoded, reference[:10] + reference[11:]):
        np.testing.assert_array_equal(got, want)
    messages = warnings_of(caplog)
    assert len(messages) == 1, messages
    assert str(broken) in messages[0] and "skipped 1 damaged packet" in messages[0]
    assert "decoded 19 of the 20 frames" in messages[0]


def test_clean_video_logs_no_warning(tmp_path, caplog):
    path = tmp_path / "clean.mp4"
    encode(path, pictures(6, 48, 64))
    with caplog.at_level(logging.WARNING, logger="fiffdepth_core.app.video"):
        assert len(list(read_frames(path))) == 6
        probe_video(path)
    assert warnings_of(caplog) == []


@needs_h264
def test_damaged_first_packet_does_not_stop_probe(tmp_path, caplog):
    path = tmp_path / "first.mp4"
    encode(path, pictures(8, 48, 64))
    reference = clean_decode(path)
    damage(path, 0)
    info = probe_video(path)  # it decodes a frame for the rotation: the first good one will do
    assert (info.width, info.height, info.frames, info.rotation) == (64, 48, 8, 0)
    with caplog.at_level(logging.WARNING, logger="fiffdepth_core.app.video"):
        decoded = list(read_frames(path))
    assert len(decoded) == 7
    for got, want in zip(decoded, reference[1:]):
        np.testing.assert_array_equal(got, want)
    assert len(warnings_of(caplog)) == 1


def test_nothing_decodable_is_a_value_error_naming_the_file(tmp_path):
    path = tmp_path / "ruined.mp4"
    encode(path, pictures(4, 48, 64))
    for index in range(4):
        damage(path, index)
    with pytest.raises(ValueError, match=r"cannot decode any frame of .*ruined\.mp4"):
        list(read_frames(path))
    with pytest.raises(ValueError, match=r"ruined\.mp4"):
        probe_video(path)


def test_truncated_faststart_mp4_warns_decoded_against_declared(tmp_path, caplog):
    path = tmp_path / "cut.mp4"
    encode(path, pictures(20, 48, 64), faststart=True)
    reference = clean_decode(path)
    offsets = packets(path)
    assert offsets[0][0] < offsets[-1][0]  # faststart: the index comes first, the packets follow it
    path.write_bytes(path.read_bytes()[:offsets[8][0] + 3])  # packets 0-7 whole, 8 cut short, 9-19 gone
    assert probe_video(path).frames == 20  # the index still declares them all
    with caplog.at_level(logging.WARNING, logger="fiffdepth_core.app.video"):
        decoded = list(read_frames(path))
    assert 1 <= len(decoded) <= 9
    for got, want in zip(decoded, reference):
        np.testing.assert_array_equal(got, want)
    messages = warnings_of(caplog)
    assert len(messages) == 1, messages
    assert str(path) in messages[0] and f"decoded {len(decoded)} of the 20 frames the container declares" \
        in messages[0]


# 2. a picture size that changes mid-stream ------------------------------------------------------------------------


@needs_h264
def test_size_change_is_scaled_to_the_first_size(tmp_path, caplog):
    first, second, joined = tmp_path / "a.ts", tmp_path / "b.ts", tmp_path / "joined.ts"
    encode(first, pictures(6, 64, 96, seed=1), container_format="mpegts")
    encode(second, pictures(6, 48, 80, seed=2), container_format="mpegts")
    joined.write_bytes(first.read_bytes() + second.read_bytes())  # MPEG-TS concatenates by bytes
    part_one, part_two = clean_decode(first), clean_decode(second)
    assert {a.shape for a in part_two} == {(48, 80, 3)}
    with caplog.at_level(logging.WARNING, logger="fiffdepth_core.app.video"):
        decoded = list(read_frames(joined))
    assert len(decoded) == 12
    assert {a.shape for a in decoded} == {(64, 96, 3)}
    for got, want in zip(decoded[:6], part_one):
        np.testing.assert_array_equal(got, want)
    from PIL import Image  # an independent scaler: the scaled frames are the second clip's pictures, enlarged

    enlarged = [np.asarray(Image.fromarray(small).resize((96, 64), Image.BICUBIC)).astype(float) for small in part_two]
    for k, got in enumerate(decoded[6:]):  # scaled in YUV by swscale, not in RGB: close, not equal
        error = np.abs(got.astype(float) - enlarged[k]).mean()
        assert error < 8.0 and error < 0.5 * np.abs(got.astype(float) - enlarged[(k + 3) % 6]).mean(), k
    info = probe_video(joined)
    assert (info.width, info.height) == (96, 64)
    messages = warnings_of(caplog)
    assert len(messages) == 1, messages
    assert str(joined) in messages[0] and "80x48" in messages[0] and "96x64" in messages[0]


# 3. cover art -----------------------------------------------------------------------------------------------------


def add_cover(container, height: int = 16, width: int = 32):
    cover = container.add_stream("png")
    cover.width, cover.height, cover.pix_fmt = width, height, "rgb24"
    try:
        cover.disposition = av.stream.Disposition.attached_pic
    except (AttributeError, TypeError, ValueError) as err:
        pytest.skip(f"this PyAV cannot set a stream's disposition: {err}")
    return cover


def mux_cover(container, cover, height: int = 16, width: int = 32) -> None:
    picture = np.full((height, width, 3), 200, np.uint8)
    for packet in cover.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
        container.mux(packet)
    for packet in cover.encode():
        container.mux(packet)


def test_audio_with_cover_art_is_not_a_video(tmp_path):
    path = tmp_path / "song.mp4"
    with av.open(str(path), "w", format="mp4") as out:
        audio = out.add_stream("aac", rate=44100)
        cover = add_cover(out)
        sound = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        sound.sample_rate = 44100
        for k in range(5):
            sound.pts = k * 1024
            for packet in audio.encode(sound):
                out.mux(packet)
        for packet in audio.encode():
            out.mux(packet)
        mux_cover(out, cover)
    with av.open(str(path)) as check:  # the file is what it should be: one audio stream, one cover picture
        assert [s.type for s in check.streams] == ["audio", "video"]
        assert int(check.streams.video[0].disposition) & 0x400
    with pytest.raises(ValueError, match=r"song\.mp4 has no video stream \(only cover art\)"):
        probe_video(path)
    with pytest.raises(ValueError, match=r"song\.mp4 has no video stream"):
        list(read_frames(path))


def test_video_with_cover_art_reads_the_video(tmp_path):
    """A regression guard (the MP4 muxer stores the cover after the video, so the first video stream is the real
    one here): the cover is not mistaken for the video, nor the video for cover art."""
    path = tmp_path / "covered.mp4"
    frames = pictures(5, 48, 64)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg2video", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        cover = add_cover(out)
        mux_cover(out, cover)
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with av.open(str(path)) as check:
        assert [int(s.disposition) & 0x400 for s in check.streams.video] == [0, 0x400]
    info = probe_video(path)
    assert (info.width, info.height, info.fps) == (64, 48, Fraction(12))
    decoded = list(read_frames(path))
    assert len(decoded) == 5 and {a.shape for a in decoded} == {(48, 64, 3)}
    for got, want in zip(decoded, frames):
        assert np.abs(got.astype(float) - want).mean() < 8.0


# 4. output file mode and no-clobber publishing ------------------------------------------------------------------


def write_small(path: Path, overwrite: bool = False, between=None) -> None:
    with VideoWriter(path, 12, overwrite=overwrite) as out:
        for array in pictures(3, 16, 16):
            out.write(array)
        if between is not None:
            between()


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_output_mode_follows_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_small(tmp_path / "out.mp4")
    finally:
        os.umask(old)
    assert (tmp_path / "out.mp4").stat().st_mode & 0o777 == 0o666 & ~umask


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_file_that_appears_while_writing_is_kept(tmp_path):
    path = tmp_path / "race.mp4"
    with pytest.raises(FileExistsError, match=r"race\.mp4 appeared while it was being written; kept it"):
        write_small(path, between=lambda: path.write_bytes(b"theirs"))
    assert path.read_bytes() == b"theirs" and leftovers(tmp_path) == []


def test_publish_has_no_window_between_check_and_rename(tmp_path, monkeypatch):
    """The other writer's file lands after any existence check could run (simulated: exists() says no)."""
    path = tmp_path / "race.mp4"

    def land():
        path.write_bytes(b"theirs")
        monkeypatch.setattr(Path, "exists", lambda self, *a, **k: False)

    with pytest.raises(FileExistsError, match=r"race\.mp4"):
        write_small(path, between=land)
    monkeypatch.undo()
    assert path.read_bytes() == b"theirs" and leftovers(tmp_path) == []


def test_publish_without_hard_links_falls_back(tmp_path, monkeypatch):
    def no_links(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "plain.mp4"
    write_small(path)
    assert len(clean_decode(path)) == 3 and leftovers(tmp_path) == []
    other = tmp_path / "other.mp4"
    with pytest.raises(FileExistsError, match=r"other\.mp4 appeared"):
        write_small(other, between=lambda: other.write_bytes(b"theirs"))
    assert other.read_bytes() == b"theirs" and leftovers(tmp_path) == []


def test_overwrite_replaces(tmp_path):
    path = tmp_path / "again.mp4"
    write_small(path, overwrite=True, between=lambda: path.write_bytes(b"old"))
    assert len(clean_decode(path)) == 3 and leftovers(tmp_path) == []


# 5. the MPEG-4 Part 2 fallback encoder -----------------------------------------------------------------------------


@pytest.mark.parametrize("fps", [Fraction(1311000, 43753), Fraction(30000, 1001), Fraction(1, 3)])
def test_mpeg4_fallback_opens_with_any_frame_rate(tmp_path, monkeypatch, fps):
    if "mpeg4" not in av.codecs_available:
        pytest.skip("this FFmpeg build has no mpeg4 encoder")
    monkeypatch.setattr(video_module._av(), "codecs_available", set(av.codecs_available) - {"libx264"})
    path = tmp_path / "fallback.mp4"
    frames = pictures(4, 32, 48)
    with VideoWriter(path, fps) as out:
        for array in frames:
            out.write(array)
    with av.open(str(path)) as check:
        stream = check.streams.video[0]
        assert stream.codec_context.name == "mpeg4"
        assert abs(float(stream.average_rate) / float(fps) - 1) < 1e-6
    assert len(clean_decode(path)) == 4


# 6. container extensions ------------------------------------------------------------------------------------------


def test_common_video_containers_are_videos(tmp_path):
    names = ["a.ts", "b.MTS", "c.m2ts", "d.3gp", "e.3g2", "f.flv", "g.ogv", "h.VOB", "i.mxf", "j.mp4"]
    for name in names:
        assert is_video(name), name
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "notes.txt").write_bytes(b"")
    assert [p.name for p in list_videos([tmp_path])] == sorted(names)


# 7. playable outputs: 4:2:0, the source's sample aspect ratio and frame timing ----------------------------------


VFR_TIMES = [Fraction(t, 1000) for t in (0, 40, 80, 200, 240, 400, 440, 480)]  # 25 fps with two long gaps


def encode_source(path: Path, frames: list[np.ndarray], times: list[Fraction], sar: Fraction) -> None:
    """An odd-sized, variable-frame-rate, anamorphic clip, as phones and screen recorders make them (4:4:4)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(H264, rate=25)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv444p"
        stream.codec_context.sample_aspect_ratio = sar
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for array, time in zip(frames, times):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts, frame.time_base = int(time * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def stream_facts(path: Path) -> dict:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times = [Fraction(f.pts) * Fraction(f.time_base or stream.time_base) for f in container.decode(stream)]
        return {"size": (stream.codec_context.width, stream.codec_context.height),
                "pix_fmt": stream.codec_context.pix_fmt, "sar": stream.sample_aspect_ratio,
                "times": [t - times[0] for t in times], "duration": container.duration / 1e6}


@needs_h264
def test_odd_sizes_are_padded_to_420_with_the_sample_aspect_ratio_and_times_kept(tmp_path):
    source = tmp_path / "phone.mp4"
    frames = pictures(len(VFR_TIMES), 35, 51, seed=4)
    encode_source(source, frames, VFR_TIMES, Fraction(4, 3))
    info = probe_video(source)
    assert info.sample_aspect_ratio == Fraction(4, 3) and (info.width, info.height) == (51, 35)
    timed = list(video_module.read_timed_frames(source))
    assert [t for _, t in timed] == VFR_TIMES  # exact: time stamp x time base
    out = tmp_path / "depth.mp4"
    with VideoWriter(out, info.fps, sample_aspect_ratio=info.sample_aspect_ratio, time_base=info.time_base) as writer:
        for array, time in timed:
            writer.write(array, time)
    facts = stream_facts(out)
    assert facts["pix_fmt"] == "yuv420p" and facts["size"] == (52, 36) and facts["sar"] == Fraction(4, 3)
    assert facts["times"] == VFR_TIMES  # the variable frame rate is kept, frame by frame
    source_duration = stream_facts(source)["duration"]
    assert abs(facts["duration"] - source_duration) < 0.041, (facts["duration"], source_duration)
    back = [array for array, _ in video_module.read_timed_frames(out)]
    assert np.abs(back[3][:35, :51].astype(float) - frames[3]).mean() < 8  # the picture, with a repeated edge
    assert np.abs(back[3][:35, 51].astype(float) - back[3][:35, 50]).mean() < 4


def test_mpeg4_fallback_keeps_a_constant_rate_and_says_so_for_irregular_times(tmp_path, monkeypatch, caplog):
    if "mpeg4" not in av.codecs_available:
        pytest.skip("this FFmpeg build has no mpeg4 encoder")
    monkeypatch.setattr(video_module._av(), "codecs_available", set(av.codecs_available) - {"libx264"})
    out = tmp_path / "fallback.mp4"
    with caplog.at_level(logging.WARNING, logger="fiffdepth_core.app.video"):
        with VideoWriter(out, 25) as writer:
            for array, time in zip(pictures(len(VFR_TIMES), 35, 51), VFR_TIMES):
                writer.write(array, time)
    facts = stream_facts(out)
    assert facts["pix_fmt"] == "yuv420p" and facts["size"] == (52, 36)
    assert facts["times"] == [Fraction(k, 25) for k in range(len(VFR_TIMES))]
    assert [r.getMessage() for r in caplog.records] == [
        "fallback.mp4: the source's frame times are irregular (variable frame rate), but this FFmpeg build has no "
        "H.264 encoder; written at a constant 25 fps instead"]


@needs_h264
@pytest.mark.parametrize("rotation", [90, 180])
def test_a_quarter_turned_video_swaps_its_sample_aspect_ratio(tmp_path, rotation):
    source = tmp_path / "turned.mp4"
    with av.open(str(source), "w") as container:  # a phone video: the display matrix asks for a turn
        stream = container.add_stream(H264, rate=12)
        if not hasattr(stream, "set_display_rotation"):
            pytest.skip(f"PyAV {av.__version__} cannot write a display rotation")
        stream.width, stream.height, stream.pix_fmt = 52, 36, "yuv420p"
        stream.codec_context.sample_aspect_ratio = Fraction(4, 3)
        stream.set_display_rotation(rotation)
        for array in pictures(3, 36, 52):
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    info = probe_video(source)
    shown = Fraction(3, 4) if rotation == 90 else Fraction(4, 3)  # a pixel's width becomes its height
    assert (abs(info.rotation), info.sample_aspect_ratio) == (rotation, shown)


@needs_h264
def test_cli_videos_of_an_odd_sized_anamorphic_variable_rate_clip_play(tmp_path, tiny_checkpoint):
    """What ``fiffdepth predict`` writes for a phone-like clip: yuv420p at the next even size, the source's SAR, and
    every frame at the source's time; the depth files keep the exact size."""
    from fiffdepth_core.app.cli import main

    times = VFR_TIMES[:6]
    source = tmp_path / "phone.mp4"
    encode_source(source, pictures(len(times), 35, 51, seed=2), times, Fraction(8, 9))
    out = tmp_path / "out"
    assert main(["predict", str(source), "--checkpoint", str(tiny_checkpoint), "--processing-resolution", "64",
                 "--format", "npy", "color", "--output-dir", str(out), "-q"]) == 0
    assert np.load(out / "phone" / "phone_000000.npy").shape == (35, 51)
    for name in ("phone_controlnet.mp4", "phone_color.mp4"):
        facts = stream_facts(out / name)
        assert (facts["pix_fmt"], facts["size"], facts["sar"]) == ("yuv420p", (52, 36), Fraction(8, 9)), name
        assert facts["times"] == times, name
        assert probe_video(out / name).frames == len(times)
