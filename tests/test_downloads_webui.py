"""A catalogue model in the WebUIs: with nothing installed, the first FiffDepth detect downloads the default model into
models/fiffdepth/<id>/ (console progress), the next one makes no request, and starting the WebUI makes none.

Against the stand-ins of sd-webui-controlnet and Forge (offline, always run) and, when FORGE_PATH/FORGE_PYTHON and
A1111_PATH/A1111_PYTHON are set, against the real WebUIs through ``/controlnet/detect``. The hub is the loopback one
(fiffdepth_testkit.hub) serving tiny stand-ins under the real ids and commits, reached through HF_ENDPOINT.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from webui_host import decode_png, http_json, png_b64, requires, webui_server
from webui_standins import install

from fiffdepth_core.method.postprocess import controlnet_depth
from fiffdepth_core.method.predictor import PredictConfig, predict_depth
from fiffdepth_core.weights.catalogue import DEFAULT_ID, get_model
from fiffdepth_core.weights.checkpoint import load_standalone
from fiffdepth_core.weights.download import MANIFEST
from fiffdepth_testkit.catalogue_repos import write_repo
from fiffdepth_testkit.hub import LoopbackHub
from fiffdepth_testkit.images import seeded_images
from fiffdepth_webui import register as reg

DEFAULT = get_model(DEFAULT_ID)
OTHER = get_model("lotus-depth-d-v1-1")


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    root = tmp_path_factory.mktemp("repos")
    return {m.id: write_repo(m, root / m.id, seed=30 + i) for i, m in enumerate((DEFAULT, OTHER))}


@pytest.fixture
def hub(repos, monkeypatch):
    with LoopbackHub() as server:
        for model in (DEFAULT, OTHER):
            server.add_folder(model.repo, model.revision, repos[model.id])
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        yield server


def image_u8(seed=2) -> np.ndarray:
    return np.round(seeded_images(1, 96, 136, seed=seed)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def reference_grey(folder, image: np.ndarray, resolution: int) -> np.ndarray:
    images = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.inference_mode():
        depth = predict_depth(load_standalone(folder), images, PredictConfig(processing_resolution=resolution))
    return np.round(controlnet_depth(depth)[0].numpy() * 255.0).astype(np.uint8)


def test_first_run_downloads_the_default_and_the_next_makes_no_request(monkeypatch, tmp_path, hub, repos, caplog):
    """The A1111 stand-in (its policy runs the standalone backbone; Forge's backend needs the real Forge, below)."""
    mods = install(monkeypatch, "a1111", tmp_path / "models")
    registry = mods["scripts.supported_preprocessor"].Preprocessor
    monkeypatch.setattr(registry, "all_processors", {})
    monkeypatch.setattr(registry, "all_processors_by_name", {})
    made = {p.name: p for p in reg.register()}
    mods["modules.script_callbacks"].settings[-1]()
    choices = mods["modules.shared"].opts.data_labels["fiffdepth_checkpoint"].component_args()["choices"]
    assert choices[0] == "(first found)" and DEFAULT.label in choices and OTHER.label in choices
    assert hub.requests == [], "registering and listing the settings make no request"
    image = image_u8()
    with caplog.at_level(logging.INFO, logger="fiffdepth"):
        first = made["depth_fiffdepth"](image, 128)
    folder = tmp_path / "models" / "fiffdepth" / DEFAULT.id
    assert (folder / MANIFEST).is_file()
    assert f"FiffDepth: downloading {DEFAULT.id}: 100%" in caplog.text
    count = len(hub.requests)
    second = made["depth_fiffdepth"](image, 128)
    assert len(hub.requests) == count > 0
    assert np.array_equal(first, second) and np.array_equal(first[..., 0], reference_grey(folder, image, 128))
    mods["modules.shared"].opts.data["fiffdepth_checkpoint"] = OTHER.label  # a catalogue entry from the settings
    made["depth_fiffdepth"](image, 128)
    assert (tmp_path / "models" / "fiffdepth" / OTHER.id / MANIFEST).is_file()


@pytest.mark.slow
@pytest.mark.webui
@pytest.mark.parametrize("host", [pytest.param("forge", marks=requires("forge")),
                                  pytest.param("a1111", marks=requires("a1111"))])
def test_a_real_webuis_first_detect_downloads_and_the_second_does_not(host, hub, tmp_path):
    image = image_u8()
    payload = {"controlnet_module": "depth_fiffdepth", "controlnet_input_images": [png_b64(image)],
               "controlnet_processor_res": 128}
    with webui_server(host, tmp_path) as (url, _, log_path):
        assert hub.requests == [], f"{host}'s start makes no request"
        status, body = http_json(url + "/controlnet/detect", payload)
        assert status == 200, body
        count = len(hub.requests)
        status, again = http_json(url + "/controlnet/detect", payload)
        assert status == 200, again
        assert len(hub.requests) == count > 0, "the second detect makes no request"
        text = log_path.read_text()
    folder = tmp_path / "models" / "fiffdepth" / DEFAULT.id
    assert (folder / MANIFEST).is_file() and f"downloading {DEFAULT.id}: 100%" in text
    grey = decode_png(body["images"][0])
    grey = grey if grey.ndim == 2 else grey[..., 0]
    assert np.abs(grey.astype(int) - reference_grey(folder, image, 128).astype(int)).max() <= 1
