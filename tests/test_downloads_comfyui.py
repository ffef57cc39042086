"""A catalogue model in a real ComfyUI: the loader lists it with its download size, running it downloads into
models/fiffdepth/<id>/ with ComfyUI's progress bar and loads it; the next run makes no request.

The hub is the loopback one (fiffdepth_testkit.hub) serving a tiny Lotus-D v1.1 stand-in under its real id and
commit; ComfyUI reaches it through HF_ENDPOINT, as a user's mirror. Skipped unless COMFYUI_PATH is set.
"""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest
import torch
from comfy_host import comfy_server, import_comfy, post_prompt, requires_comfyui, wait_for
from PIL import Image

from fiffdepth_core.method.predictor import PredictConfig, predict_depth
from fiffdepth_core.weights.catalogue import get_model
from fiffdepth_core.weights.checkpoint import load_standalone
from fiffdepth_core.weights.download import MANIFEST
from fiffdepth_testkit.catalogue_repos import write_repo
from fiffdepth_testkit.hub import LoopbackHub
from fiffdepth_testkit.images import seeded_images

pytestmark = [pytest.mark.comfyui, requires_comfyui]
MODEL = get_model("lotus-depth-d-v1-1")
FP32_TOL = 1e-5  # the host path against the standalone predictor in fp32 (tests/test_comfyui_host.py)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return write_repo(MODEL, tmp_path_factory.mktemp("repo") / MODEL.id, seed=7)


@pytest.fixture
def hub(repo, monkeypatch):
    with LoopbackHub() as server:
        server.add_folder(MODEL.repo, MODEL.revision, repo)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        yield server


def standalone(folder, image):
    with torch.inference_mode():
        return predict_depth(load_standalone(folder), image, PredictConfig(processing_resolution=0))[0]


def test_the_loader_downloads_with_comfyuis_progress_bar(hub, tmp_path):
    nodes = import_comfy(tmp_path / "models", tmp_path / "output")
    import comfy.utils

    loader = nodes.NODE_CLASS_MAPPINGS["FiffDepthLoader"]
    options = loader.define_schema().inputs[0].options
    assert MODEL.label in options and hub.requests == [], "listing the models makes no request"
    ticks = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: ticks.append((value, total)))
    try:
        assert loader.validate_inputs(model_name=MODEL.label) is True
        with torch.inference_mode():
            model, vae, cond = loader.execute(model_name=MODEL.label, precision="fp32").args
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    folder = tmp_path / "models" / MODEL.id
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == \
        sorted([*MODEL.files, MANIFEST])
    assert ticks and ticks[-1][0] == ticks[-1][1] and all(a[0] <= b[0] for a, b in zip(ticks, ticks[1:]))
    assert MODEL.id in loader.define_schema().inputs[0].options and MODEL.label not in \
        loader.define_schema().inputs[0].options
    assert cond[0][0].shape == (1, 2, 1024)
    assert isinstance(loader.validate_inputs(model_name="not-a-model"), str)


def test_a_prompt_with_the_download_entry_downloads_then_runs_and_the_next_one_makes_no_request(hub, repo, tmp_path):
    (tmp_path / "input").mkdir()
    pixels = (seeded_images(1, 96, 128, seed=4)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "input" / "photo.png")

    def prompt(prefix):
        return {
            "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
            "2": {"class_type": "FiffDepthLoader", "inputs": {"model_name": MODEL.label, "precision": "fp32"}},
            "3": {"class_type": "FiffDepthEstimate", "inputs": {
                "model": ["2", 0], "vae": ["2", 1], "image": ["1", 0], "conditioning": ["2", 2],
                "processing_resolution": 0, "batch_size": 1, "depth_pass": "detailed", "normalization": "per_image",
                "vae_tiling": "off", "temporal": "off"}},
            "4": {"class_type": "FiffDepthSave", "inputs": {"depth": ["3", 1], "filename_prefix": prefix,
                                                             "format": "npy"}},
        }

    def options(url):
        with urllib.request.urlopen(f"{url}/object_info/FiffDepthLoader", timeout=30) as response:
            return json.dumps(json.loads(response.read())["FiffDepthLoader"]["input"]["required"]["model_name"])

    with comfy_server(tmp_path) as url:
        assert MODEL.label in options(url)
        assert hub.requests == [], "ComfyUI's start and its node listing make no request"
        status, body = post_prompt(url, prompt("first/depth"))
        assert status == 200, body
        wait_for(url, body["prompt_id"])
    made = len(hub.requests)
    with comfy_server(tmp_path) as url:  # the next session: the saved workflow still names the download entry
        assert f'"{MODEL.id}"' in options(url) and MODEL.label not in options(url)
        status, body = post_prompt(url, prompt("second/depth"))
        assert status == 200, body
        wait_for(url, body["prompt_id"])
    folder = tmp_path / "models" / "fiffdepth" / MODEL.id
    assert made > 0 and len(hub.requests) == made, "the second prompt made no request"
    for name in MODEL.files:
        assert (folder / name).read_bytes() == (repo / name).read_bytes()
    image = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255.0
    expected = standalone(folder, image).numpy()
    for run in ("first", "second"):
        saved = np.load(tmp_path / "output" / run / "depth_00001_.npy")
        assert saved.shape == (96, 128) and np.abs(saved - expected).max() <= FP32_TOL
