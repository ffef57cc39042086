"""The extension inside real WebUIs: Forge (its own backend) and AUTOMATIC1111 with sd-webui-controlnet.

Skipped (with the reason) unless ``FORGE_PATH``/``FORGE_PYTHON`` or ``A1111_PATH``/``A1111_PYTHON`` point at a
prepared WebUI (README, "Stable-Diffusion WebUI"). Each host is started once, headless on loopback, on the CPU, with
the tiny checkpoint in ``models/fiffdepth``; the hints it returns through ``/controlnet/detect`` are compared with
the standalone predictor pushed through ``controlnet_depth`` (at most 1/255 apart).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from webui_host import decode_png, http_json, png_b64, requires, startup_seconds, webui_server

from fiffdepth_core.method.postprocess import controlnet_depth
from fiffdepth_core.method.predictor import PredictConfig, predict_depth
from fiffdepth_core.weights.checkpoint import load_standalone
from fiffdepth_testkit.images import seeded_images
from fiffdepth_testkit.models import write_random_pipeline

pytestmark = pytest.mark.webui
NAMES = {"depth_fiffdepth": "detailed", "depth_fiffdepth_filtered": "filtered"}
ACCURACY = 4  # Forge's fp32 error may be this many times the standalone's (test_forge_backend_raw_depth_...)
FP32_FLOOR = 16 * 2.0**-24
log = logging.getLogger(__name__)


@pytest.fixture(scope="module", params=[pytest.param("forge", marks=requires("forge")),
                                        pytest.param("a1111", marks=requires("a1111"))])
def host(request, tmp_path_factory):
    name = request.param
    data_dir = tmp_path_factory.mktemp(name)
    checkpoint = write_random_pipeline(data_dir / "models" / "fiffdepth" / "tiny", geometry="tiny", seed=0)
    with webui_server(name, data_dir) as (url, seconds, log_path):
        log.info("%s answered after %.1f s (its own count: %s s)", name, seconds,
                 startup_seconds(log_path.read_text()))
        yield name, url, checkpoint, log_path


def reference_hint(checkpoint, image: np.ndarray, resolution: int, depth_pass: str) -> np.ndarray:
    images = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.inference_mode():
        depth = predict_depth(load_standalone(checkpoint), images,
                              PredictConfig(processing_resolution=resolution, depth_pass=depth_pass))
    return np.round(controlnet_depth(depth)[0].numpy() * 255.0).astype(np.uint8)  # [H,W]


def detect(url: str, module: str, image: np.ndarray, resolution: int | None = None) -> tuple[int, dict]:
    payload = {"controlnet_module": module, "controlnet_input_images": [png_b64(image)]}
    if resolution is not None:
        payload["controlnet_processor_res"] = resolution
    return http_json(url + "/controlnet/detect", payload)


def test_module_list_has_both_preprocessors(host):
    _, url, _, log_path = host
    status, body = http_json(url + "/controlnet/module_list")
    assert status == 200 and set(NAMES) <= set(body["module_list"])
    text = log_path.read_text()
    assert "Error loading script: fiffdepth_webui.py" not in text and "fiffdepth_webui/" not in text


@pytest.mark.parametrize("module", list(NAMES))
def test_detect_equals_standalone(host, module):
    _, url, checkpoint, _ = host
    image = np.round(seeded_images(1, 96, 136, seed=2)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    status, body = detect(url, module, image, 128)  # thresholds omitted: the API fills them with 64
    assert status == 200, body
    hint = decode_png(body["images"][0])
    assert hint.shape[:2] == (96, 136) and hint.dtype == np.uint8
    grey = hint if hint.ndim == 2 else hint[..., 0]
    if hint.ndim == 3:
        assert np.array_equal(hint[..., 0], hint[..., 1]) and np.array_equal(hint[..., 0], hint[..., 2])
    reference = reference_hint(checkpoint, image, 128, NAMES[module])
    diff = np.abs(grey.astype(int) - reference.astype(int)).max()
    log.info("%s %s: max hint difference %d/255", host[0], module, diff)
    assert diff <= 1
    assert reference.std() > 10


def test_bad_resolution_and_small_image_reach_the_api_response(host):
    name, url, _, log_path = host
    image = np.zeros((96, 96, 3), np.uint8)
    status, body = detect(url, "depth_fiffdepth", image, 5000)
    if name == "a1111":  # sd-webui-controlnet resets an out-of-range value to the slider's default itself
        assert status == 200 and "Invalid value(5000), using default value 768" in log_path.read_text()
    else:
        assert status == 422 and "`resolution` must be between 64 and 4096 px" in body.get("detail", ""), body
    status, body = detect(url, "depth_fiffdepth", np.zeros((40, 40, 3), np.uint8), 128)
    assert status == 422 and "at least 64 x 64 pixels, got 40 x 40" in body.get("detail", ""), body


def test_missing_checkpoint_message_reaches_the_api_response(host):
    _, url, _, _ = host
    status, _ = http_json(url + "/sdapi/v1/options", {"fiffdepth_checkpoint": "not-installed"})
    assert status == 200
    try:
        status, body = detect(url, "depth_fiffdepth", np.zeros((96, 96, 3), np.uint8), 128)
        assert status == 422 and "'not-installed', is neither installed nor a catalogue model; installed: tiny" in \
            body.get("detail", ""), body
    finally:
        http_json(url + "/sdapi/v1/options", {"fiffdepth_checkpoint": "(first found)"})


def test_forge_loads_the_model_once_for_both_preprocessors(host):
    name, _, _, log_path = host
    if name != "forge":
        pytest.skip("Forge prints one 'K-Model Created' line per UnetPatcher; A1111 has no such trace")
    assert log_path.read_text().count("K-Model Created") == 1


def test_settings_are_set_through_the_api_but_not_listed(host):
    """What docs/webui-api.md says: POST /sdapi/v1/options sets the FiffDepth keys (saved in the data dir's
    config.json, used by the next run); GET /sdapi/v1/options does not list them (its reply model is built before
    extensions add options). After the test above: a changed setting loads the model again."""
    import json

    _, url, _, log_path = host
    config = log_path.parent / "config.json"  # the server's --data-dir
    status, listed = http_json(url + "/sdapi/v1/options")
    assert status == 200 and "sd_model_checkpoint" in listed
    keys = {"fiffdepth_checkpoint": "tiny", "fiffdepth_precision": "fp32", "fiffdepth_family": "fiffdepth"}
    try:
        status, _ = http_json(url + "/sdapi/v1/options", keys)
        assert status == 200
        saved = json.loads(config.read_text())
        assert {k: saved.get(k) for k in keys} == keys
        status, listed = http_json(url + "/sdapi/v1/options")
        assert status == 200 and not [k for k in listed if k.startswith("fiffdepth")], listed
        status, body = detect(url, "depth_fiffdepth", np.zeros((96, 96, 3), np.uint8), 128)
        assert status == 200, body  # runs with the values just set
        status, _ = http_json(url + "/sdapi/v1/options", {"fiffdepth_family": "lotus-d"})
        status, body = detect(url, "depth_fiffdepth", np.zeros((96, 96, 3), np.uint8), 128)
        assert status == 422 and "lotus" in body.get("detail", "").lower(), body  # the next run reads the setting
    finally:
        http_json(url + "/sdapi/v1/options", {"fiffdepth_checkpoint": "(first found)", "fiffdepth_precision": "auto",
                                              "fiffdepth_family": "auto"})


def assert_within_rounding(out: dict, passes) -> None:
    """Forge's raw depth is as close to the exact (fp64) value as the standalone predictor's fp32 result is, up to
    ACCURACY times (the reasoning is in test_forge_backend_raw_depth_and_dtype_flags)."""
    for depth_pass in passes:
        fp32_error = max(out[f"{depth_pass}_standalone_error"], FP32_FLOOR)
        assert out[f"{depth_pass}_forge_error"] <= ACCURACY * fp32_error, (depth_pass, out)
        assert out[depth_pass] <= (ACCURACY + 1) * fp32_error, (depth_pass, out)


@requires("forge")
@pytest.mark.parametrize("flags, dtypes", [
    ([], ("torch.float32", "torch.float32", "torch.float32")),
    (["--unet-in-bf16", "--vae-in-bf16"], ("torch.bfloat16", "torch.float32", "torch.bfloat16")),
])
def test_forge_backend_raw_depth_and_dtype_flags(tmp_path, flags, dtypes):
    """In a Forge process (no server): the backbone on Forge's backend against the standalone predictor, raw
    depth at fp32; Forge's dtype flags choose its storage/computation/VAE dtypes.

    The tolerance comes from an error analysis, not from one run. Forge's LDM UNet and VAE and diffusers' are two
    fp32 evaluations of one function, with different operation orders (attention, convolution algorithms), so
    neither is exact: each is off the exact value by its own rounding error, amplified by the network (the
    filtered pass cascades two UNet calls and a decode). ``forge_raw_depth.py`` measures that amplification in the
    same process: the standalone predictor in fp64 is the exact value, and the standalone's own fp32 error ``e`` is
    what fp32 costs on this input, this model and this torch build (1.0e-5 detailed, 3.6e-5 filtered here). Forge
    must be as accurate: its error against fp64 at most ``ACCURACY * e`` (measured ratio 0.8-1.1; 4 leaves room
    for other builds' kernels), and so the two fp32 results at most ``(ACCURACY + 1) * e`` apart (the triangle
    inequality). ``e`` has a floor of 16 fp32 ulps of 1 (~1e-6), the rounding of the last few operations alone. A
    wrong timestep, scale or conditioning moves depth by 1e-2 or more. (The fixed 1e-5 this replaces failed once at
    1.27e-5 on the filtered pass, inside its own rounding error.)"""
    import json
    import subprocess
    from pathlib import Path

    from webui_host import host_paths

    path, python = host_paths("forge")
    checkpoint = write_random_pipeline(tmp_path / "tiny", geometry="tiny", seed=0)
    script = Path(__file__).with_name("forge_raw_depth.py")
    result = subprocess.run([python, str(script), str(checkpoint), "--always-cpu", *flags], cwd=path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert (out["storage_dtype"], out["computation_dtype"], out["vae_dtype"]) == dtypes
    if not flags:
        log.info("Forge raw depth vs standalone: %s", out)
        assert_within_rounding(out, ("detailed", "filtered"))
        assert out["detailed_std"] > 0.01


@requires("forge")
@pytest.mark.slow
def test_forge_txt2img_with_a_depth_fiffdepth_control_unit(tmp_path):
    """One txt2img call with a ControlNet unit whose module is depth_fiffdepth, on a small random SD 1.5-family
    checkpoint and depth ControlNet built from config with Forge's own classes: the control map the generation used
    equals /controlnet/detect's, and the unit changes the image."""
    import subprocess
    from pathlib import Path

    from webui_host import host_paths

    path, python = host_paths("forge")
    write_random_pipeline(tmp_path / "models" / "fiffdepth" / "tiny", geometry="tiny", seed=0)
    builder = Path(__file__).with_name("forge_tiny_sd15.py")
    result = subprocess.run([python, str(builder), str(tmp_path / "models")], cwd=path, capture_output=True,
                            text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    image = np.round(seeded_images(1, 64, 64, seed=5)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    with webui_server("forge", tmp_path) as (url, _, _):
        _, models = http_json(url + "/controlnet/model_list")
        control_model = next(m for m in models["model_list"] if m.startswith("tiny_control_depth"))
        unit = {"enabled": True, "module": "depth_fiffdepth", "model": control_model, "image": png_b64(image),
                "processor_res": 64}
        base = {"prompt": "a room", "steps": 1, "width": 64, "height": 64, "sampler_name": "Euler", "cfg_scale": 1.0,
                "seed": 1, "override_settings": {"sd_model_checkpoint": "tiny_sd15"}}
        status, on = http_json(url + "/sdapi/v1/txt2img",
                               {**base, "alwayson_scripts": {"ControlNet": {"args": [unit]}}})
        assert status == 200, on
        status, off = http_json(url + "/sdapi/v1/txt2img",
                                {**base, "alwayson_scripts": {"ControlNet": {"args": [{**unit, "enabled": False}]}}})
        assert status == 200, off
        _, detected = detect(url, "depth_fiffdepth", image, 64)
    assert len(on["images"]) == 2 and "depth_fiffdepth" in on["info"]  # the picture and the control map it used
    control_map, hint = decode_png(on["images"][1]), decode_png(detected["images"][0])
    assert np.array_equal(control_map, hint) and hint.std() > 10
    generated, plain = decode_png(on["images"][0]).astype(int), decode_png(off["images"][0]).astype(int)
    assert np.abs(generated - plain).max() > 0  # the control unit changed the generation


@requires("forge")
@pytest.mark.parametrize("family, name", [("lotus", "lotus-d"), ("e2e_ft", "marigold-e2e-ft"),
                                          ("genpercept", "genpercept")])
def test_forge_backend_runs_the_other_families(tmp_path, family, name):
    """Lotus-D (class label through the LDM UNet's ADM input), Marigold-E2E-FT (zero latent appended) and
    GenPercept on Forge's backend equal the standalone predictor (raw depth, fp32, within the rounding error that
    test_forge_backend_raw_depth_and_dtype_flags derives)."""
    import json
    import subprocess
    from pathlib import Path

    import family_checkpoints
    from webui_host import host_paths

    path, python = host_paths("forge")
    checkpoint = getattr(family_checkpoints, f"write_{family}")(tmp_path / family)
    script = Path(__file__).with_name("forge_raw_depth.py")
    result = subprocess.run([python, str(script), str(checkpoint), "--always-cpu"], cwd=path, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    log.info("Forge %s raw depth vs standalone: %s", name, out)
    assert out["family"] == name and out["detailed_std"] > 0.01
    assert_within_rounding(out, ("detailed",))
