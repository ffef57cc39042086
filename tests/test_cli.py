"""``python -m fiffdepth_core predict``: formats, mixed sizes, existing outputs, bad input."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from fiffdepth_core.app.cli import main
from fiffdepth_core.fileio.images import load_image
from fiffdepth_core.method.image import to_rgb
from fiffdepth_core.method.predictor import PredictConfig, predict_depth
from fiffdepth_testkit.images import seeded_images


def save(path, tensor):
    array = (tensor.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)
    return path


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    save(folder / "a.png", seeded_images(1, 64, 96, seed=1)[0])
    save(folder / "b.png", seeded_images(1, 64, 96, seed=2)[0])
    save(folder / "c.png", seeded_images(1, 50, 70, channels=1, seed=3)[0])  # grey, odd size
    save(folder / "d.png", seeded_images(1, 40, 40, channels=4, seed=4)[0])  # RGBA
    return folder


def test_predict_folder_writes_every_format_matching_the_library(photos, tiny_checkpoint, tiny_backbone, tmp_path):
    out = tmp_path / "out"
    code = main(["predict", str(photos), "--checkpoint", str(tiny_checkpoint), "--processing-resolution", "64",
                 "--batch-size", "2", "--format", "npy", "png16", "exr", "controlnet", "color",
                 "--output-dir", str(out), "-q"])
    assert code == 0
    for stem in "abcd":
        for suffix in (".npy", "_depth16.png", ".exr", "_controlnet.png", "_color.png"):
            assert (out / f"{stem}{suffix}").is_file(), f"{stem}{suffix}"
    for stem, size in (("a", (64, 96)), ("c", (50, 70)), ("d", (40, 40))):
        depth = np.load(out / f"{stem}.npy")
        assert depth.shape == size and depth.dtype == np.float32
        image = to_rgb(load_image(photos / f"{stem}.png")[None])
        with torch.inference_mode():
            expected = predict_depth(tiny_backbone, image, PredictConfig(processing_resolution=64))[0]
        assert np.abs(depth - expected.numpy()).max() <= 2e-4  # batch of 2 vs 1 (fp32 kernel order)


def test_existing_outputs_stop_the_run_before_the_model_loads(photos, tiny_checkpoint, tmp_path, cli_error):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.npy").write_bytes(b"keep me")
    assert re.search("already exist",
                     cli_error(["predict", str(photos / "a.png"), "--checkpoint", str(tmp_path / "not-loaded-yet"),
                                "--output-dir", str(out)]))
    assert (out / "a.npy").read_bytes() == b"keep me"


def test_overwrite_replaces(photos, tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.npy").write_bytes(b"old")
    assert main(["predict", str(photos / "a.png"), "--checkpoint", str(tiny_checkpoint), "--format", "npy",
                 "--output-dir", str(out), "--overwrite", "-q", "--processing-resolution", "0"]) == 0
    assert np.load(out / "a.npy").shape == (64, 96)


def test_same_stem_from_two_folders_is_refused(photos, tmp_path, tiny_checkpoint, cli_error):
    other = tmp_path / "other"
    other.mkdir()
    save(other / "a.png", seeded_images(1, 8, 8)[0])
    assert re.search("share the name",
                     cli_error(["predict", str(photos / "a.png"), str(other / "a.png"), "--checkpoint",
                                str(tiny_checkpoint), "--output-dir", str(tmp_path / "out")]))


def test_bad_arguments_name_the_flag(photos, tiny_checkpoint, tmp_path, cli_error):
    assert re.search("--batch-size",
                     cli_error(["predict", str(photos), "--checkpoint", str(tiny_checkpoint), "--batch-size", "-1"]))
    assert main(["predict", str(photos / "a.png"), "--checkpoint", str(tmp_path / "missing"), "-q",
                 "--output-dir", str(tmp_path / "o")]) == 2
    with pytest.raises(SystemExit):
        main(["predict", str(photos), "--checkpoint", str(tiny_checkpoint), "--format", "jpeg"])


def test_automatic_batch_size(photos, tiny_checkpoint, tmp_path, monkeypatch):
    seen = []
    real = __import__("fiffdepth_core.app.cli", fromlist=["predict_depth"]).predict_depth
    monkeypatch.setattr("fiffdepth_core.app.cli.predict_depth",
                        lambda backbone, batch, config, **kw: seen.append(config.batch_size) or real(backbone, batch,
                                                                                                   config, **kw))
    assert main(["predict", str(photos), "--checkpoint", str(tiny_checkpoint), "--batch-size", "0", "-q",
                 "--output-dir", str(tmp_path / "o"), "--format", "npy", "--processing-resolution", "0"]) == 0
    assert seen[0] == 2  # a and b share a size: one call with both (plenty of free memory on this machine)
    assert len(list((tmp_path / "o").glob("*.npy"))) == 4


@pytest.mark.slow
def test_module_entry_point_runs(photos, tiny_checkpoint, tmp_path):
    result = subprocess.run([sys.executable, "-m", "fiffdepth_core", "predict", str(photos / "b.png"),
                             "--checkpoint", str(tiny_checkpoint), "--format", "npy", "--output-dir",
                             str(tmp_path / "o"), "--processing-resolution", "0", "-q"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "o" / "b.npy").shape == (64, 96)


def test_too_large_for_memory_gives_a_clear_message(photos, tiny_checkpoint, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("fiffdepth_core.app.cli.free_memory", lambda device: 2**20)  # pretend 1 MiB is free
    code = main(["predict", str(photos / "a.png"), "--checkpoint", str(tiny_checkpoint), "--output-dir",
                 str(tmp_path / "o"), "-q", "--vae-tiling", "off"])
    assert code == 2
    assert "needs about" in caplog.text and "GiB is free" in caplog.text
    assert not (tmp_path / "o" / "a.npy").exists()


def test_whole_run_controlnet_normalisation_across_sizes(photos, tiny_checkpoint, tmp_path):
    from fiffdepth_core.method.postprocess import controlnet_depth, whole_run_bounds

    out = tmp_path / "o"
    assert main(["predict", str(photos), "--checkpoint", str(tiny_checkpoint), "--format", "npy", "controlnet",
                 "--normalization", "whole_batch", "--output-dir", str(out), "-q", "--processing-resolution", "0"]) == 0
    depths = {s: torch.from_numpy(np.load(out / f"{s}.npy")) for s in "abcd"}
    bounds = whole_run_bounds(list(depths.values()))
    for stem, depth in depths.items():
        written = np.asarray(Image.open(out / f"{stem}_controlnet.png")).astype(np.float32) / 255.0
        expected = controlnet_depth(depth[None], bounds=bounds)[0].numpy()
        assert np.abs(written - expected).max() <= 0.5 / 255 + 1e-6
