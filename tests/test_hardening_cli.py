"""Hostile inputs and outputs for the CLI and the file writers: huge images, user files, bad images, disk errors."""

from __future__ import annotations

import re
import errno
import logging
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from fiffdepth_core.app.cli import main
from fiffdepth_core.fileio.images import load_image
from fiffdepth_core.fileio.writers import write_atomic, write_npy


def small_png(path, seed=0, size=(24, 32)):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def bomb_png(path, width, height):
    """A valid all-black greyscale PNG of ``width`` x ``height`` that is tiny on disk (streamed, never in memory)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    packer, row, parts = zlib.compressobj(9), b"\x00" * (width + 1), []
    for _ in range(height):
        parts.append(packer.compress(row))
    parts.append(packer.flush())
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    path = bomb_png(tmp_path_factory.mktemp("bomb") / "bomb.png", 10_000, 10_000)
    assert path.stat().st_size < 1_000_000  # 100 megapixels in under 1 MB
    return path


def test_a_decompression_bomb_is_refused_from_its_header(bomb):
    with pytest.raises(ValueError, match=r"10000x10000 = 100\.0 megapixels, above the limit of 89\.5 megapixels "
                                         r"\(raise it with --max-pixels N or the FIFFDEPTH_MAX_PIXELS"):
        load_image(bomb)


def test_the_pixel_limit_can_be_lowered_and_raised(tmp_path, monkeypatch):
    image = small_png(tmp_path / "a.png")
    with pytest.raises(ValueError, match="32x24 = 768 pixels, above the limit of 500 pixels"):
        load_image(image, max_pixels=500)
    assert load_image(image, max_pixels=0).shape == (3, 24, 32)  # 0 = no limit
    monkeypatch.setenv("FIFFDEPTH_MAX_PIXELS", "500")
    with pytest.raises(ValueError, match="above the limit"):
        load_image(image)


def test_cli_refuses_a_bomb_before_the_model_loads(bomb, tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        code = main(["predict", str(bomb), "--checkpoint", str(tmp_path / "not-loaded"), "-q",
                     "--output-dir", str(tmp_path / "out")])
    assert code == 2
    assert "10000x10000" in caplog.text and "--max-pixels" in caplog.text and "not-loaded" not in caplog.text


def test_training_and_evaluation_readers_refuse_a_bomb(bomb):
    from train.datasets.eval_readers import decode_rgb_array as eval_decode
    from train.datasets.raster_io import read_png_units, read_rgb

    data = bomb.read_bytes()
    for read in (lambda: read_png_units(bomb), lambda: read_rgb(data, "member"), lambda: eval_decode(data, "rgb")):
        with pytest.raises(ValueError, match="10000x10000"):
            read()


def test_an_input_that_would_be_an_output_is_never_overwritten(tmp_path, caplog, cli_error):
    folder = tmp_path / "photos"
    folder.mkdir()
    small_png(folder / "x.png", 1)
    users = small_png(folder / "x_color.png", 2)  # the user's own photo, named like an output
    before = users.read_bytes()
    assert re.search(r"x_color\.png output of .*x\.png would replace the input image",
                     cli_error(["predict", str(folder), "--checkpoint", str(tmp_path / "not-loaded"), "--output-dir",
                                str(folder), "--format", "color", "--overwrite", "-q"]))
    assert users.read_bytes() == before


def test_outputs_of_a_run_are_not_inputs_of_the_next(tmp_path, tiny_checkpoint):
    folder = tmp_path / "photos"
    folder.mkdir()
    small_png(folder / "a.png", 1)
    args = ["predict", str(folder), "--checkpoint", str(tiny_checkpoint), "--output-dir", str(folder), "--format",
            "png16", "color", "--processing-resolution", "32", "-q"]
    assert main(args) == 0
    assert main(args + ["--overwrite"]) == 0  # the second run reads a.png only
    assert sorted(p.name for p in folder.glob("*.png")) == ["a.png", "a_color.png", "a_depth16.png"]


def test_skip_existing_resumes_a_half_done_folder(tmp_path, tiny_checkpoint):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, name in enumerate("abc"):
        small_png(folder / f"{name}.png", i)
    out = tmp_path / "out"
    base = ["predict", "--checkpoint", str(tiny_checkpoint), "--output-dir", str(out), "--format", "npy",
            "--processing-resolution", "32", "-q"]
    assert main(base[:1] + [str(folder / "a.png")] + base[1:]) == 0
    first = (out / "a.npy").stat().st_mtime_ns
    assert main(base[:1] + [str(folder)] + base[1:] + ["--skip-existing"]) == 0
    assert (out / "a.npy").stat().st_mtime_ns == first  # kept, not recomputed
    assert sorted(p.name for p in out.glob("*.npy")) == ["a.npy", "b.npy", "c.npy"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_get_the_permissions_of_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        path = write_npy(tmp_path / "d.npy", torch.zeros(4, 4))
        other = write_atomic(tmp_path / "t.txt", lambda tmp: tmp.write_text("x"), overwrite=False)
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == mode and other.stat().st_mode & 0o777 == mode


def test_unreadable_images_are_all_reported_before_the_model_loads(tmp_path, caplog):
    folder = tmp_path / "photos"
    folder.mkdir()
    small_png(folder / "a.png")
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (folder / "c.jpg").write_bytes(b"")
    with caplog.at_level(logging.INFO):
        code = main(["predict", str(folder), "--checkpoint", str(tmp_path / "not-loaded"), "-q",
                     "--output-dir", str(tmp_path / "out")])
    assert code == 2
    assert "b.png" in caplog.text and "c.jpg" in caplog.text and "2 of 3 input(s) cannot be used" in caplog.text
    assert "not-loaded" not in caplog.text  # stopped before the checkpoint was looked at
    assert not (tmp_path / "out").exists()


def test_on_error_skip_processes_the_rest_and_writes_a_summary(tmp_path, tiny_checkpoint):
    folder = tmp_path / "photos"
    folder.mkdir()
    small_png(folder / "a.png", 1)
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    small_png(folder / "c.png", 3)
    truncated = small_png(folder / "d.png", 4).read_bytes()
    (folder / "d.png").write_bytes(truncated[: len(truncated) // 2])  # header fine, data cut short
    out = tmp_path / "out"
    assert main(["predict", str(folder), "--checkpoint", str(tiny_checkpoint), "--output-dir", str(out), "-q",
                 "--format", "npy", "--processing-resolution", "32", "--on-error", "skip"]) == 0
    assert sorted(p.name for p in out.glob("*.npy")) == ["a.npy", "c.npy"]
    summary = (out / "fiffdepth_skipped.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in summary] == [str(folder / "b.png"), str(folder / "d.png")]


def test_a_read_only_output_folder_stops_before_the_model_loads(tmp_path, monkeypatch, caplog, cli_error):
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)  # what a read-only folder does to any new file
    image = small_png(tmp_path / "a.png")
    assert re.search(r"--output-dir: .*out is not writable: Permission denied",
                     cli_error(["predict", str(image), "--checkpoint", str(tmp_path / "not-loaded"), "--output-dir",
                                str(tmp_path / "out"), "-q"]))


def test_a_full_disk_ends_in_one_line_naming_the_file(tmp_path, tiny_checkpoint, monkeypatch, caplog):
    image = small_png(tmp_path / "a.png")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full)
    with caplog.at_level(logging.ERROR):
        code = main(["predict", str(image), "--checkpoint", str(tiny_checkpoint), "--output-dir",
                     str(tmp_path / "out"), "--format", "npy", "--processing-resolution", "32", "-q"])
    assert code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "a.npy" in errors[0] and "No space left on device" in errors[0]
    assert "\n" not in errors[0] and "Traceback" not in caplog.text
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".a.npy")]  # no temporary left


def test_non_finite_fp32_output_names_the_image_and_does_not_advise_fp32(tmp_path, tiny_checkpoint, monkeypatch,
                                                                          caplog):
    from fiffdepth_core.method.backbone import StandaloneBackbone

    image = small_png(tmp_path / "a.png")
    monkeypatch.setattr(StandaloneBackbone, "decode", lambda self, latent: torch.full(
        (latent.shape[0], 3, latent.shape[2] * 8, latent.shape[3] * 8), float("nan")))
    with caplog.at_level(logging.ERROR):
        code = main(["predict", str(image), "--checkpoint", str(tiny_checkpoint), "--output-dir",
                     str(tmp_path / "out"), "--dtype", "fp32", "--processing-resolution", "32", "-q"])
    assert code == 2
    assert "a.png" in caplog.text and "not fp16 overflow" in caplog.text
    assert "fp32 instead" not in caplog.text and "use fp32" not in caplog.text


def test_debug_shows_the_traceback(tmp_path):
    from fiffdepth_core.weights.layout import CheckpointError

    image = small_png(tmp_path / "a.png")
    argv = ["predict", str(image), "--checkpoint", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "o"),
            "-q"]
    assert main(argv) == 2
    with pytest.raises(CheckpointError):
        main(argv + ["--debug"])


def test_the_memory_pre_check_counts_the_decode_and_the_input():
    from fiffdepth_core.fileio.headers import ImageHeader
    from fiffdepth_core.method.planning import (
        InsufficientMemoryError,
        check_decode,
        check_memory,
        padded_size,
        unet_bytes,
        vae_bytes,
    )
    from fiffdepth_core.method.predictor import PredictConfig

    header = ImageHeader(8000, 6000, 3, 1)  # 48 MP RGB: 144 MB decoded + two float32 RGB copies (1.15 GB)
    assert header.decode_bytes() == 48_000_000 * 3 + 2 * 48_000_000 * 3 * 4
    with pytest.raises(InsufficientMemoryError, match="big.jpg: decoding this 8000x6000 image needs about 1.2 GiB"):
        check_decode(header, 2**30, "big.jpg")
    check_decode(header, 2 * 2**30, "big.jpg")
    config = PredictConfig(processing_resolution=64)
    shape = (1, 3, 6000, 8000)
    height, width = padded_size(shape, config)
    model = max(vae_bytes(height, width, 1, torch.float32), unet_bytes(height, width, 1, torch.float32))
    with pytest.raises(InsufficientMemoryError, match="input 0.7 GiB"):  # the full-size input counts too
        check_memory(shape, config, model + 10 * 2**20, torch.float32, torch.float32)
    check_memory(shape, config, model + 4 * 6000 * 8000 * 4, torch.float32, torch.float32)


def test_a_tiff_pillow_cannot_open_is_measured_from_its_directory(tmp_path, monkeypatch):
    import io

    from fiffdepth_core.fileio import headers as inputs

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((30, 50), np.uint16)).save(buffer, format="TIFF")
    path = tmp_path / "x.tif"
    path.write_bytes(buffer.getvalue())
    monkeypatch.setattr(inputs, "_pil_header", lambda source: None)  # as for a TIFF only OpenCV decodes
    header = inputs.read_header(path)
    assert (header.width, header.height, header.channels, header.bytes_per_sample) == (50, 30, 1, 2)
    with pytest.raises(ValueError, match="50x30 = 1500 pixels, above the limit of 1000 pixels"):
        inputs.check_image(path, max_pixels=1000)


def test_videos_are_checked_before_the_model_loads_too(tmp_path, caplog):
    pytest.importorskip("av", reason="PyAV (the `video` extra) is not installed")
    from clips import write_flat_clip

    folder = tmp_path / "clips"
    write_flat_clip(folder / "walk.mp4")
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")
    with caplog.at_level(logging.ERROR):
        code = main(["predict", str(folder), "--checkpoint", str(tmp_path / "not-loaded"), "-q", "--max-pixels",
                     "1000", "--output-dir", str(tmp_path / "out")])
    assert code == 2
    assert "cannot read video" in caplog.text and "broken.mp4" in caplog.text
    assert "walk.mp4 has 56x40 frames = 2240 pixels, above the limit of 1000 pixels" in caplog.text
    assert "not-loaded" not in caplog.text
