"""The WebUI extension offline: host detection, registration, settings, checkpoints and the preprocessors' output,
against recording stand-ins of sd-webui-controlnet (A1111) and Forge (tests/webui_standins.py)."""

from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from webui_standins import Recorder, install

from fiffdepth_core.method.postprocess import controlnet_depth
from fiffdepth_core.method.predictor import PredictConfig, predict_depth
from fiffdepth_core.weights.catalogue import DEFAULT_ID
from fiffdepth_core.weights.checkpoint import load_standalone
from fiffdepth_core.weights.text_embed import EMBED_FILE
from fiffdepth_testkit.images import seeded_images
from fiffdepth_webui import register as reg
from fiffdepth_webui.hosts import detect_host

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("depth_fiffdepth", "depth_fiffdepth_filtered")


def registered(host: str, mods: dict) -> dict:
    if host == "a1111":
        return dict(mods["scripts.supported_preprocessor"].Preprocessor.all_processors_by_name)
    return dict(mods["modules_forge.shared"].supported_preprocessors)


@pytest.fixture
def a1111(monkeypatch, tmp_path, tiny_checkpoint):
    recorder = Recorder()
    mods = install(monkeypatch, "a1111", tmp_path / "models", recorder)
    (tmp_path / "models" / "fiffdepth").mkdir(parents=True)
    (tmp_path / "models" / "fiffdepth" / "tiny").symlink_to(tiny_checkpoint, target_is_directory=True)
    registry = mods["scripts.supported_preprocessor"].Preprocessor
    monkeypatch.setattr(registry, "all_processors", {})
    monkeypatch.setattr(registry, "all_processors_by_name", {})
    made = {p.name: p for p in reg.register()}
    return made, mods, recorder


def reference_hint(checkpoint, image_u8: np.ndarray, resolution: int, depth_pass: str) -> np.ndarray:
    """The standalone predictor through controlnet_depth, written out independently of the extension."""
    images = torch.from_numpy(image_u8.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.inference_mode():
        depth = predict_depth(load_standalone(checkpoint), images,
                              PredictConfig(processing_resolution=resolution, depth_pass=depth_pass))
    grey = np.round(controlnet_depth(depth)[0].numpy() * 255.0).astype(np.uint8)
    return np.stack([grey] * 3, axis=-1)


def rgb_u8(height=96, width=128, seed=1) -> np.ndarray:
    return np.round(seeded_images(1, height, width, seed=seed)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)


@pytest.mark.parametrize("host", [None, "a1111", "forge"])
def test_detect_host(monkeypatch, tmp_path, host):
    install(monkeypatch, host, tmp_path)
    assert detect_host()[0] == host


def test_no_controlnet_logs_one_line_and_registers_nothing(monkeypatch, tmp_path, caplog):
    install(monkeypatch, None, tmp_path)
    entry = ROOT / "scripts" / "fiffdepth_webui.py"
    spec = importlib.util.spec_from_file_location("fiffdepth_webui.py", entry)  # as the WebUIs load scripts
    with caplog.at_level(logging.INFO, logger="fiffdepth"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    lines = [r for r in caplog.records if r.name == "fiffdepth"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING and lines[0].exc_info is None
    assert "sd-webui-controlnet" in lines[0].getMessage() and "no preprocessors registered" in lines[0].getMessage()


@pytest.mark.parametrize("host", ["a1111", "forge"])
def test_registration_names_tags_and_sliders(monkeypatch, tmp_path, host):
    mods = install(monkeypatch, host, tmp_path / "models")
    if host == "a1111":
        registry = mods["scripts.supported_preprocessor"].Preprocessor
        monkeypatch.setattr(registry, "all_processors", {})
        monkeypatch.setattr(registry, "all_processors_by_name", {})
    reg.register()
    reg.register()  # a UI reload runs the script again: no "already registered" assertion
    found = registered(host, mods)
    assert sorted(found) == sorted(NAMES)
    for p in found.values():
        assert p.tags == ["Depth"]
        slider = p.slider_resolution
        values = slider.gradio_update_kwargs if host == "forge" else vars(slider)
        assert (values["minimum"], values["maximum"], values["value"], values["visible"]) == (64, 4096, 768, True)
        for extra in (p.slider_1, p.slider_2, p.slider_3):  # no threshold sliders (the API fills them with 64)
            assert (extra.gradio_update_kwargs if host == "forge" else vars(extra))["visible"] is False
    callbacks = mods["modules.script_callbacks"].settings
    callbacks[-1]()
    opts = mods["modules.shared"].opts
    assert opts.data == {"fiffdepth_checkpoint": "(first found)", "fiffdepth_precision": "auto",
                         "fiffdepth_family": "auto"}
    assert opts.data_labels["fiffdepth_checkpoint"].section == ("fiffdepth", "FiffDepth")


@pytest.mark.parametrize("host", ["a1111", "forge"])
def test_nothing_installed_offline_names_the_default_model_and_where_it_goes(monkeypatch, tmp_path, host):
    """Nothing installed: the default catalogue model would download on first use; offline, one line says so."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mods = install(monkeypatch, host, tmp_path / "models")
    if host == "a1111":
        registry = mods["scripts.supported_preprocessor"].Preprocessor
        monkeypatch.setattr(registry, "all_processors", {})
        monkeypatch.setattr(registry, "all_processors_by_name", {})
    preprocessor = registered(host, mods)["depth_fiffdepth"] if reg.register() else None
    with pytest.raises(Exception) as err:
        preprocessor(rgb_u8(), 768, 64, 64)
    message = str(err.value)
    assert "\n" not in message and "HF_HUB_OFFLINE" in message and DEFAULT_ID in message
    assert str(tmp_path / "models" / "fiffdepth" / DEFAULT_ID) in message
    assert f"python -m fiffdepth_core download {DEFAULT_ID}" in message
    assert err.value.detail == message and err.value.status_code == 422  # the WebUI API copies these


def test_broken_checkpoint_message_reaches_the_ui(monkeypatch, tmp_path):
    mods = install(monkeypatch, "a1111", tmp_path / "models")
    registry = mods["scripts.supported_preprocessor"].Preprocessor
    monkeypatch.setattr(registry, "all_processors", {})
    monkeypatch.setattr(registry, "all_processors_by_name", {})
    broken = tmp_path / "models" / "fiffdepth" / "broken"
    (broken / "unet").mkdir(parents=True)
    (broken / "unet" / "config.json").write_text("{}")
    preprocessor = {p.name: p for p in reg.register()}["depth_fiffdepth"]
    with pytest.raises(Exception) as err:
        preprocessor(rgb_u8(), 768)
    assert f"checkpoint {broken} is incomplete" in str(err.value) and "missing vae/config.json" in str(err.value)


@pytest.mark.parametrize("name, depth_pass", [("depth_fiffdepth", "detailed"),
                                              ("depth_fiffdepth_filtered", "filtered")])
def test_hint_equals_standalone_through_controlnet_depth(a1111, tiny_checkpoint, name, depth_pass):
    made, _, _ = a1111
    image = rgb_u8(96, 128)
    hint = made[name](image, 128, 64, 64)  # the detect API's default thresholds do nothing
    assert hint.shape == (96, 128, 3) and hint.dtype == np.uint8
    assert np.array_equal(hint, reference_hint(tiny_checkpoint, image, 128, depth_pass))
    assert hint.std() > 10  # a real depth map, not a flat one


def test_filtered_pass_differs(a1111):
    made, _, _ = a1111
    image = rgb_u8(96, 128)
    assert not np.array_equal(made["depth_fiffdepth"](image, 128), made["depth_fiffdepth_filtered"](image, 128))


def test_grey_rgba_and_16_bit_inputs(a1111):
    made, _, _ = a1111
    run = made["depth_fiffdepth"]
    rgb = rgb_u8(80, 100)
    grey = rgb[..., 0]
    assert np.array_equal(run(grey, 128), run(np.stack([grey] * 3, -1), 128))
    rgba = np.concatenate([rgb, np.full((80, 100, 1), 7, np.uint8)], axis=-1)
    assert np.array_equal(run(rgba, 128), run(rgb, 128))  # alpha is ignored
    sixteen = rgb.astype(np.uint16) * 257  # the same picture at 16 bits
    assert np.array_equal(run(sixteen, 128), run(rgb, 128))
    assert np.array_equal(run(sixteen.astype(np.int32), 128), run(rgb, 128))  # Pillow's 'I' mode for 16-bit PNGs


@pytest.mark.parametrize("image, resolution, message", [
    (np.zeros((40, 200, 3), np.uint8), 768, r"`input_image` must be at least 64 x 64 pixels, got 200 x 40"),
    (np.zeros((96, 96, 5), np.uint8), 768, r"`input_image` must be an H x W grey or H x W x C image"),
    (None, 5000, r"`resolution` must be between 64 and 4096 px \(-1 = default 768\), got 5000"),
    (None, 32, r"`resolution` must be between 64 and 4096 px .* got 32"),
    (None, 100.5, r"`resolution` must be a whole number of pixels .* got 100.5"),
])
def test_bad_inputs_give_one_clear_message(a1111, image, resolution, message):
    made, _, _ = a1111
    with pytest.raises(Exception, match=message) as err:
        made["depth_fiffdepth"](rgb_u8() if image is None else image, resolution)
    assert err.value.status_code == 422


def test_unset_resolution_means_the_default():
    from fiffdepth_webui.images import check_resolution

    assert check_resolution(-1) == check_resolution(None) == 768 and check_resolution(512.0) == 512


def test_model_is_cached_until_checkpoint_or_precision_changes(a1111, monkeypatch, tmp_path, tiny_checkpoint):
    made, mods, _ = a1111
    (tmp_path / "models" / "fiffdepth" / "tiny").unlink()  # a fresh copy: the first load caches the embedding in it
    shutil.copytree(tiny_checkpoint, tmp_path / "models" / "fiffdepth" / "tiny")
    (tmp_path / "models" / "fiffdepth" / "tiny" / EMBED_FILE).unlink(missing_ok=True)
    preprocessor = made["depth_fiffdepth"]
    estimator = preprocessor.model.estimator
    built = []
    original = estimator.policy.build
    monkeypatch.setattr(estimator.policy, "build", lambda path, precision, family: built.append(
        (path.name, precision)) or original(path, precision, family))
    image = rgb_u8(64, 64)
    preprocessor(image, 64)
    made["depth_fiffdepth_filtered"](image, 64)
    assert built == [("tiny", "auto")]  # one load for both preprocessors
    opts = mods["modules.shared"].opts
    opts.data["fiffdepth_precision"] = "fp32"
    preprocessor(image, 64)
    shutil.copytree(tiny_checkpoint, tmp_path / "models" / "fiffdepth" / "tiny2")
    opts.data["fiffdepth_checkpoint"] = "tiny2"
    preprocessor(image, 64)
    preprocessor(image, 64)
    assert built == [("tiny", "auto"), ("tiny", "fp32"), ("tiny2", "fp32")]
    opts.data["fiffdepth_checkpoint"] = "gone"
    with pytest.raises(Exception, match=r"Settings -> FiffDepth, 'gone', is neither installed nor a catalogue model; "
                                        r"installed: tiny, tiny2"):
        preprocessor(image, 64)


def test_command_line_flag_overrides_settings(a1111, tmp_path, tiny_checkpoint):
    made, mods, _ = a1111
    cmd_opts = mods["modules.shared"].cmd_opts
    cmd_opts.fiffdepth_checkpoint = str(tmp_path / "nowhere")
    with pytest.raises(Exception, match=r"--fiffdepth-checkpoint points at .*nowhere, which does not exist"):
        made["depth_fiffdepth"](rgb_u8(), 64)
    cmd_opts.fiffdepth_checkpoint = str(tiny_checkpoint)
    assert made["depth_fiffdepth"](rgb_u8(), 64).shape == (96, 128, 3)


def test_a1111_policies_offload_no_half_unload_and_cancel(a1111):
    made, mods, recorder = a1111
    shared = mods["modules.shared"]
    preprocessor = made["depth_fiffdepth"]
    shared.cmd_opts.lowvram, shared.cmd_opts.no_half = True, True
    shared.opts.data["fiffdepth_precision"] = "bf16"
    preprocessor(rgb_u8(), 64)
    assert ("send_everything_to_cpu",) in recorder.calls and ("get_device_for", "controlnet") in recorder.calls
    assert recorder.calls[-1] == ("torch_gc",)  # low memory: FiffDepth's model is given back after the run
    backbone = preprocessor.model.estimator.loaded.backbone
    assert backbone.dtype == torch.float32 and backbone.vae_dtype == torch.float32  # --no-half wins
    assert preprocessor.unload() is True and recorder.calls[-1] == ("torch_gc",)
    assert preprocessor.model.estimator.loaded is not None  # still cached: the next call reuses it
    shared.state.interrupted = True
    with pytest.raises(Exception, match="FiffDepth: interrupted"):
        preprocessor(rgb_u8(), 64)


@pytest.mark.parametrize("family", ["lotus", "e2e_ft"])
def test_other_families_run_through_the_same_preprocessor(a1111, tmp_path, family):
    """A Lotus-D / Marigold-E2E-FT checkpoint is detected and run as its family (standalone, through the family
    record); the filtered pass, FiffDepth's only, gives a clear message."""
    import family_checkpoints

    from fiffdepth_core.method.families import get_family

    made, mods, _ = a1111
    checkpoint = getattr(family_checkpoints, f"write_{family}")(tmp_path / "models" / "fiffdepth" / family)
    mods["modules.shared"].opts.data["fiffdepth_checkpoint"] = family
    image = rgb_u8(64, 80)
    hint = made["depth_fiffdepth"](image, 64)
    backbone = made["depth_fiffdepth"].model.estimator.loaded.backbone
    expected = {"lotus": "lotus-d", "e2e_ft": "marigold-e2e-ft"}[family]
    assert backbone.family == get_family(expected)
    images = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.inference_mode():
        depth = predict_depth(load_standalone(checkpoint), images, PredictConfig(processing_resolution=64))
    reference = np.round(controlnet_depth(depth)[0].numpy() * 255.0).astype(np.uint8)
    assert np.array_equal(hint[..., 0], reference)
    with pytest.raises(Exception, match="exists only for FiffDepth checkpoints") as err:
        made["depth_fiffdepth_filtered"](image, 64)
    assert err.value.status_code == 422
