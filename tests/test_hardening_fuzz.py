"""Seeded fuzzing of the image and checkpoint readers: random truncations and byte flips of valid files.

Every damaged file must give a clear error (the reader's ValueError family, naming the file) or a correct read;
never a hang, an interpreter crash, or an exception of another type (which the CLI would show as a traceback).
"""

from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from PIL import Image

from fiffdepth_core.fileio.images import load_image
from fiffdepth_core.weights.checkpoint import empty_embedding, inspect_checkpoint, load_state_dict

CASES = 24  # per format: fast (the whole file runs in a few seconds) and the same every run


@contextmanager
def deadline(seconds: int):
    """Turn a hang into a test failure (SIGALRM; the readers are all synchronous)."""
    def expired(*_):
        raise TimeoutError(f"the reader hung for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """A truncation, some byte flips, or both (flips weighted toward the header, where parsers branch)."""
    array = bytearray(data)
    kind = rng.integers(3)
    if kind in (1, 2):
        for _ in range(int(rng.integers(1, 9))):
            high = min(len(array), 256) if rng.random() < 0.6 else len(array)
            array[int(rng.integers(high))] ^= int(rng.integers(1, 256))
    if kind in (0, 2):
        array = array[: int(rng.integers(0, len(array)))]
    return bytes(array)


def image_bytes(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    if fmt == "png16":
        image = Image.fromarray(rng.integers(0, 65535, (20, 28), dtype=np.uint16))
        fmt = "png"
    else:
        image = Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format={"jpg": "JPEG", "tif": "TIFF"}.get(fmt, fmt.upper()))
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["png", "png16", "jpg", "tif", "bmp", "webp"])
def test_damaged_images_give_a_clear_error_or_a_correct_read(tmp_path, fmt):
    valid = image_bytes(fmt)
    suffix = ".png" if fmt == "png16" else f".{fmt}"
    rng = np.random.default_rng(hash(fmt) % 2**32)
    outcomes = {"read": 0, "error": 0}
    for case in range(CASES):
        path = tmp_path / f"case{case}{suffix}"
        path.write_bytes(mutate(valid, rng))
        with deadline(10):
            try:
                image = load_image(path)
            except ValueError as err:
                assert str(path) in str(err)
                outcomes["error"] += 1
                continue
        assert image.dtype == torch.float32 and image.ndim == 3 and 1 <= image.shape[0] <= 4
        assert torch.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
        outcomes["read"] += 1
    assert outcomes["error"] > 0  # the fuzzing does damage files


@pytest.fixture(scope="module")
def bundle_bytes(tmp_path_factory):
    from fiffdepth_core.weights.export import export_bundle
    from fiffdepth_testkit.models import geometry_configs, random_unet, random_vae

    unet_config, vae_config, _ = geometry_configs("tiny")
    path = tmp_path_factory.mktemp("bundle") / "b.safetensors"
    export_bundle(path, random_unet(unet_config, seed=0), random_vae(vae_config, seed=0),
                  torch.zeros(1, 2, unet_config["cross_attention_dim"]))
    return path.read_bytes()


def _header_heavy(data: bytes, rng: np.random.Generator) -> bytes:
    """Mutations that mostly land in the safetensors header (its first 8 + N bytes), where the parsing happens."""
    header_end = 8 + int.from_bytes(data[:8], "little")
    array = bytearray(data)
    if rng.random() < 0.5:
        for _ in range(int(rng.integers(1, 6))):
            array[int(rng.integers(header_end))] ^= int(rng.integers(1, 256))
    else:
        array = array[: int(rng.integers(0, len(array)))]
    return bytes(array)


def test_damaged_bundles_give_a_clear_error_or_a_correct_read(tmp_path, bundle_bytes):
    from fiffdepth_core.weights.layout import CheckpointError

    rng = np.random.default_rng(7)
    errors = 0
    for case in range(CASES):
        path = tmp_path / f"case{case}.safetensors"
        path.write_bytes(_header_heavy(bundle_bytes, rng))
        with deadline(20):
            try:
                info = inspect_checkpoint(path)
                for part in ("unet", "vae"):
                    assert load_state_dict(info, part)
                assert empty_embedding(info).ndim == 3
            except ValueError as err:  # CheckpointError and the embedding's ValueError
                assert isinstance(err, CheckpointError) or str(path) in str(err)
                errors += 1
    assert errors > 0


def test_damaged_config_json_gives_a_clear_error(tiny_checkpoint, tmp_path):
    import shutil

    from fiffdepth_core.weights.layout import CheckpointError

    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, folder, ignore=shutil.ignore_patterns("text_encoder", "tokenizer"))
    valid = (folder / "unet" / "config.json").read_bytes()
    rng = np.random.default_rng(3)
    for _ in range(CASES):
        (folder / "unet" / "config.json").write_bytes(mutate(valid, rng))
        with deadline(10):
            try:
                inspect_checkpoint(folder)
            except CheckpointError:
                pass
    (folder / "unet" / "config.json").write_bytes(valid)
    assert json.loads(valid)["in_channels"] == 4


def _fuzzed_folder(folder, count: int, seed: int):
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for fmt in ("png", "jpg", "tif"):
        valid = image_bytes(fmt)
        for case in range(count):
            (folder / f"{fmt}{case}.{fmt}").write_bytes(mutate(valid, rng))
    return folder


@pytest.mark.slow  # a CLI run over 18 images
def test_the_cli_survives_a_folder_of_damaged_images(tmp_path, tiny_checkpoint, caplog):
    from fiffdepth_core.app.cli import main

    folder = _fuzzed_folder(tmp_path / "photos", 6, seed=11)
    with caplog.at_level(logging.WARNING), deadline(120):
        code = main(["predict", str(folder), "--checkpoint", str(tiny_checkpoint), "--output-dir",
                     str(tmp_path / "out"), "--format", "npy", "--processing-resolution", "32", "-q",
                     "--on-error", "skip"])
    assert code == 0
    summary = (tmp_path / "out" / "fiffdepth_skipped.txt").read_text().splitlines()
    written = list((tmp_path / "out").glob("*.npy"))
    assert len(summary) + len(written) == 18 and summary and written


@pytest.mark.slow
def test_the_cli_process_never_crashes_or_prints_a_traceback(tmp_path, tiny_checkpoint):
    folder = _fuzzed_folder(tmp_path / "photos", 10, seed=12)
    for on_error in ("stop", "skip"):
        result = subprocess.run([sys.executable, "-m", "fiffdepth_core", "predict", str(folder), "--checkpoint",
                                 str(tiny_checkpoint), "--output-dir", str(tmp_path / on_error), "--format", "npy",
                                 "--processing-resolution", "32", "-q", "--on-error", on_error],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == (2 if on_error == "stop" else 0), result.stderr[-2000:]
        assert "Traceback" not in result.stderr
