"""The bundled workflows in a real ComfyUI (COMFYUI_PATH; skipped without it).

A headless server's ``/object_info`` confirms the pack schemas (as ``pack_schemas.py`` records them) and every core
node's slots and widgets; workflows 2-5 pass the server's ``/prompt`` validation with placeholder model files;
workflows 1 and 4 (video, temporal = stabilize) run end to end on a tiny stand-in of the catalogue model their FiffDepth
Loader starts on (installed where the first run's download puts it) and their 16-bit PNGs decode to the standalone
predictor's depth of that model. With Chromium installed too, ComfyUI's own frontend loads every workflow and
saves it back meaning the same (``workflow_format.differences``), and its ``graphToPrompt`` gives the same prompt
as ``workflow_api.ui_to_api``: both the frontend ComfyUI pins and the newest ``comfyui-frontend-package``
(``COMFYUI_FRONTEND_ROOT``, a prepared ``static`` folder, or else installed from the package registry into a
scratch folder), which a second server runs with ``--front-end-root``.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from bundled_workflows import (
    LOADERS,
    NAMES,
    check_widget_value,
    linked_widgets,
    load,
    of_type,
)
from comfy_host import comfy_server, object_info, post_prompt, requires_comfyui, wait_for
from pack_schemas import pack_object_info
from workflow_api import (
    VIRTUAL_NODES,
    combo_values,
    input_slots,
    ordered_inputs,
    output_slots,
    saved_inputs,
    spec_type,
    ui_to_api,
    widget_layout,
    widget_values,
)
from workflow_format import differences, format_problems

pytestmark = [pytest.mark.comfyui, requires_comfyui]


@pytest.fixture(scope="module")
def pack_info():
    return pack_object_info()


def _post(url: str, path: str, body: dict) -> None:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).read()


def _drain(url: str, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with urllib.request.urlopen(url + "/queue", timeout=10) as response:
            queue = json.loads(response.read())
        if not queue["queue_running"] and not queue["queue_pending"]:
            return
        time.sleep(0.25)
    raise TimeoutError("the queue did not drain")


def write_inputs(input_dir: Path) -> np.ndarray:
    """``example.png`` (returned as uint8 ``[H,W,3]``) and a 4-frame ``example.mp4``."""
    import av
    from PIL import Image

    from fiffdepth_testkit.images import seeded_images

    input_dir.mkdir(parents=True, exist_ok=True)
    pixels = (seeded_images(1, 96, 128, seed=4)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(pixels).save(input_dir / "example.png")
    # A textured pan: flat frames would make the random model's GroupNorms divide by ~0 and amplify rounding.
    pan = (seeded_images(1, 48, 64 + 3, seed=5)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    with av.open(str(input_dir / "example.mp4"), mode="w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(4):
            frame = np.ascontiguousarray(pan[:, i:i + 64])
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return pixels


def install_stand_in(model, root: Path, scratch: Path) -> Path:
    """A tiny seeded stand-in of catalogue ``model`` installed as the loader's download would leave it:
    ``root/<id>/`` holding the files the download fetches (and nothing else)."""
    import shutil

    from fiffdepth_testkit.catalogue_repos import write_repo

    repo = write_repo(model, scratch / model.id, seed=0)
    for name in model.files_for():
        target = root / model.id / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(repo / name, target)
    return root / model.id


def prepare_base(base: Path) -> tuple[np.ndarray, Path, str]:
    """A ComfyUI base directory with the catalogue model the templates' FiffDepth Loaders start on installed as a
    tiny stand-in (what the first run's download leaves in ``models/fiffdepth/<id>/``), empty placeholder files for
    every other model they name, the loaders' input files and quiet frontend settings. Returns the input image's
    pixels, the stand-in's folder and the family the loader runs it as."""
    from frontend import write_quiet_settings

    from fiffdepth_core.weights.catalogue import get_model

    for name in NAMES:
        for node in load(name)["nodes"]:
            if node["type"] in LOADERS and node["type"] != "FiffDepthLoader":
                target = base / "models" / LOADERS[node["type"]][0] / node["widgets_values"][0]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()
    (label,) = {node["widgets_values"][0] for name in NAMES for node in of_type(load(name), "FiffDepthLoader")}
    model = get_model(label)
    checkpoint = install_stand_in(model, base / "models" / "fiffdepth", base / "stand_in_repo")
    pixels = write_inputs(base / "input")
    write_quiet_settings(base)
    return pixels, checkpoint, model.family


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A headless ComfyUI (its pinned frontend) on a base directory made by ``prepare_base``."""
    base = tmp_path_factory.mktemp("comfy_workflows")
    pixels, checkpoint, family = prepare_base(base)
    with comfy_server(base) as url:
        yield {"url": url, "base": base, "info": object_info(url), "pixels": pixels, "checkpoint": checkpoint,
               "family": family}


@pytest.fixture(scope="module")
def newest_frontend(tmp_path_factory) -> Path:
    """The newest ``comfyui-frontend-package``'s static folder: ``COMFYUI_FRONTEND_ROOT`` when set (a prepared
    folder, for machines without the package registry), else installed from the registry into a scratch folder."""
    import frontend

    root = os.environ.get("COMFYUI_FRONTEND_ROOT")
    if root:
        return Path(root)
    try:
        return frontend.install_frontend_package(tmp_path_factory.mktemp("frontend"))[1]
    except RuntimeError as err:
        pytest.skip(f"the newest frontend could not be installed (set COMFYUI_FRONTEND_ROOT): {err}")


@pytest.fixture(scope="module", params=["pinned", "newest"])
def frontend_server(request, server, tmp_path_factory):
    """``server`` with the frontend ComfyUI pins, or a second server of the same ComfyUI started with
    ``--front-end-root`` on the newest frontend package."""
    if request.param == "pinned":
        with urllib.request.urlopen(server["url"] + "/system_stats", timeout=10) as response:
            pinned = json.loads(response.read())["system"]["required_frontend_version"]
        yield {**server, "expect": pinned}
        return
    root = request.getfixturevalue("newest_frontend")
    base = tmp_path_factory.mktemp("comfy_newest_frontend")
    prepare_base(base)
    with comfy_server(base, front_end_root=root) as url:
        yield {"url": url, "info": object_info(url), "expect": None}


def test_pack_schemas_agree_with_object_info(server, pack_info):
    live = server["info"]
    for node_type, ours in pack_info.items():
        theirs = live[node_type]
        dynamic = {name for name, spec, _ in ordered_inputs(ours)  # model lists: the files present decide (and, for
                   if spec_type(spec) == "COMBO" and not combo_values(spec)  # FiffDepthLoader, the catalogue)
                   or name == LOADERS.get(node_type, (None, None))[1]}
        assert ordered_inputs_summary(ours, dynamic) == ordered_inputs_summary(theirs, dynamic), node_type
        assert widget_layout(ours) == widget_layout(theirs), node_type
        assert input_slots(ours) == input_slots(theirs), node_type
        assert output_slots(ours) == output_slots(theirs), node_type


def ordered_inputs_summary(info: dict, dynamic: set[str]) -> list:
    """Names, types, optionality and combo options (except model lists, which depend on the files present)."""
    return [(name, spec_type(spec), optional,
             combo_values(spec) if spec_type(spec) == "COMBO" and name not in dynamic else None)
            for name, spec, optional in ordered_inputs(info)]


@pytest.mark.parametrize("name", NAMES)
def test_every_node_matches_object_info(server, name):
    wf, live = load(name), server["info"]
    for node in wf["nodes"]:
        if node["type"] in VIRTUAL_NODES:
            continue
        where = f"{name}: node {node['id']} ({node['type']})"
        info = live[node["type"]]
        expected = saved_inputs(info, linked_widgets(node))
        assert [(s["name"], s["type"]) for s in node["inputs"]] == [(s.name, s.type) for s in expected], where
        assert [(o["name"], o["type"]) for o in node["outputs"]] == output_slots(info), where
        specs = {n: spec for n, spec, _ in ordered_inputs(info)}
        for input_name, value in widget_values(node, info).items():
            if node["type"] == "FiffDepthLoader" and input_name == "model_name":  # a catalogue label: valid once
                assert isinstance(value, str), where  # installed too, when the list shows the id (validate_inputs)
            elif input_name not in linked_widgets(node):
                check_widget_value(where, input_name, specs[input_name], value)


def test_image_workflow_runs_end_to_end(server):
    run_image_workflow(server)


def run_image_workflow(server: dict) -> None:
    """Workflow 1 through ``/prompt``: both saved 16-bit PNGs equal the standalone predictor's depth."""
    import torch
    from PIL import Image

    from fiffdepth_core.method.predictor import PredictConfig, predict_depth
    from fiffdepth_core.weights.checkpoint import load_standalone

    url, base = server["url"], server["base"]
    _drain(url)
    prompt = ui_to_api(load(NAMES[0]), server["info"])
    status, body = post_prompt(url, prompt)
    assert status == 200 and body["node_errors"] == {}, body
    entry = wait_for(url, body["prompt_id"], timeout=240)
    outputs = entry["outputs"]
    expected_outputs = {key for key, node in prompt.items() if node["class_type"] in ("FiffDepthSave", "PreviewImage")}
    assert expected_outputs <= set(outputs), (expected_outputs, set(outputs))

    # As LoadImage makes it ([1,H,W,3], float32 / 255) and FiffDepthEstimate hands it on (movedim: same strides).
    # The layout matters: the resize rounds differently for channels-last and contiguous input (~1e-7), and the
    # random tiny model amplifies that to ~1e-3 at 768 px.
    pixels = np.ascontiguousarray(server["pixels"]).astype(np.float32) / 255.0  # [H,W,3], like PIL's array
    image = torch.from_numpy(pixels)[None].movedim(-1, 1)  # [1,3,H,W]
    backbone = load_standalone(server["checkpoint"], dtype=torch.float32, family=server["family"])
    for key, node in prompt.items():
        if node["class_type"] != "FiffDepthSave":
            continue
        estimate = prompt[node["inputs"]["depth"][0]]["inputs"]
        config = PredictConfig(processing_resolution=estimate["processing_resolution"],
                               batch_size=estimate["batch_size"], depth_pass=estimate["depth_pass"])
        with torch.inference_mode():
            expected = predict_depth(backbone, image, config)[0].numpy()  # [H,W]
        (saved,) = outputs[key]["images"]
        path = base / "output" / saved["subfolder"] / saved["filename"]
        assert path.suffix == ".png" and path.name.startswith(Path(node["inputs"]["filename_prefix"]).name)
        with Image.open(path) as png:
            assert png.mode in ("I;16", "I;16B", "I") and png.size == (128, 96)
            depth = np.asarray(png, dtype=np.float64) / 65535.0
        assert np.abs(depth - expected).max() <= 1 / 65535 + 1e-4, (estimate["depth_pass"],
                                                                    np.abs(depth - expected).max())
        assert expected.std() > 0.01


def test_video_workflow_runs_end_to_end(server):
    """Workflow 4 on the real host: Load Video -> FiffDepth Estimate (temporal = stabilize) -> 16-bit depth frames
    equal to the standalone depth of the decoded frames, stabilized by the core with those frames as its pictures;
    and a ControlNet video."""
    import torch
    from PIL import Image

    from fiffdepth_core.app.video import probe_video, read_frames
    from fiffdepth_core.method.predictor import PredictConfig, predict_depth
    from fiffdepth_core.method.denoise import steady_clip
    from fiffdepth_core.method.temporal import align_sequence
    from fiffdepth_core.weights.checkpoint import load_standalone

    url, base = server["url"], server["base"]
    _drain(url)
    prompt = ui_to_api(load(NAMES[3]), server["info"])
    (estimate,) = [node["inputs"] for node in prompt.values() if node["class_type"] == "FiffDepthEstimate"]
    assert estimate["temporal"] == "stabilize" and estimate["normalization"] == "whole_batch"
    # At the model's own size: at 768 px the random tiny model turns the host's 1e-5 rounding differences into
    # 1e-4, and the robust fit's inlier choices can turn those into 1e-3 (the image test above covers 768 px).
    estimate["processing_resolution"] = 64
    status, body = post_prompt(url, prompt)
    assert status == 200 and body["node_errors"] == {}, body
    outputs = wait_for(url, body["prompt_id"], timeout=300)["outputs"]
    # As GetVideoComponents makes the batch ([T,H,W,3] float32) and FiffDepthEstimate hands it on (movedim): the
    # layout changes the resize's rounding, which the random tiny model amplifies (see the image test above).
    frames = torch.from_numpy(np.stack(list(read_frames(base / "input" / "example.mp4")))).float() / 255.0
    frames = frames.movedim(-1, 1)  # [T,3,H,W], channels-last strides
    backbone = load_standalone(server["checkpoint"], dtype=torch.float32, family=server["family"])
    config = PredictConfig(processing_resolution=estimate["processing_resolution"], batch_size=estimate["batch_size"],
                           depth_pass=estimate["depth_pass"])
    frames = steady_clip(frames)  # the temporal modes predict from steadied frames (levelled, still areas denoised)
    with torch.inference_mode():
        expected = align_sequence(predict_depth(backbone, frames, config), stabilize=True,
                                  frames=frames)[0].numpy()  # [T,H,W]: cuts and flow from the same pictures
    (save,) = [key for key, node in prompt.items() if node["class_type"] == "FiffDepthSave"]
    saved = outputs[save]["images"]
    assert len(saved) == len(frames) == 4
    for k, entry in enumerate(saved):
        with Image.open(base / "output" / entry["subfolder"] / entry["filename"]) as png:
            depth = np.asarray(png, dtype=np.float64) / 65535.0
        assert np.abs(depth - expected[k]).max() <= 1 / 65535 + 1e-4, (k, np.abs(depth - expected[k]).max())
    (video_key,) = [key for key, node in prompt.items() if node["class_type"] == "SaveVideo"]
    (video,) = outputs[video_key]["images"]  # ComfyUI lists the saved video under "images"
    info = probe_video(base / "output" / video["subfolder"] / video["filename"])
    assert (info.width, info.height, info.frames) == (64, 48, 4)


def test_generation_workflows_pass_prompt_validation(server):
    url = server["url"]
    for name in NAMES[1:]:
        _drain(url)
        status, body = post_prompt(url, ui_to_api(load(name), server["info"]))
        if status == 200:  # accepted and queued: nothing here needs to run (the placeholder models are empty)
            _post(url, "/queue", {"delete": [body["prompt_id"]]})
            _post(url, "/interrupt", {"prompt_id": body["prompt_id"]})
        assert status == 200 and body.get("node_errors") == {}, (name, body)
    _drain(url)


def test_workflows_take_a_newer_core_widget(server):
    """Newer core appended ``resolution_steps`` (default 1) to ImageScaleToTotalPixels: the workflows convert against
    that schema with the frontend's rule (new trailing widgets keep their defaults) and still pass validation."""
    import copy

    info = copy.deepcopy(server["info"])
    node = info["ImageScaleToTotalPixels"]
    node["input"]["required"]["resolution_steps"] = ["INT", {"default": 1, "min": 1, "max": 256}]
    node["input_order"]["required"].append("resolution_steps")
    url = server["url"]
    for name in NAMES[1:3]:
        prompt = ui_to_api(load(name), info)
        scales = [n for n in prompt.values() if n["class_type"] == "ImageScaleToTotalPixels"]
        assert scales and all(n["inputs"]["resolution_steps"] == 1 for n in scales), name
        for n in scales:  # this server (0.3.64) does not know the input: send it what it knows
            del n["inputs"]["resolution_steps"]
        assert prompt == ui_to_api(load(name), server["info"]), name
        _drain(url)
        status, body = post_prompt(url, prompt)
        if status == 200:
            _post(url, "/queue", {"delete": [body["prompt_id"]]})
            _post(url, "/interrupt", {"prompt_id": body["prompt_id"]})
        assert status == 200 and body.get("node_errors") == {}, (name, body)
    _drain(url)


def test_frontend_loads_and_saves_workflows_unchanged(frontend_server):
    """Each frontend (pinned, newest) loads every workflow with no missing node, its ``graphToPrompt`` gives the
    prompt ``workflow_api.ui_to_api`` gives, and what it saves is well formed and means the same as the file."""
    import frontend

    if frontend.chromium_path() is None:
        pytest.skip("no chromium on PATH (apt-get install chromium) for the frontend round trip")
    info = frontend_server["info"]

    async def round_trip():
        results = {}
        async with frontend.browser_page() as page:
            await frontend.open_app(page, frontend_server["url"])
            version = await frontend.frontend_version(page)
            page.console.clear()
            for name in NAMES:
                report = await frontend.load_workflow(page, load(name))
                results[name] = (report, await frontend.graph_to_prompt(page))
            return version, results, frontend.console_problems(page.console)

    version, results, problems = frontend.run(round_trip())
    assert version and version == (frontend_server["expect"] or version)
    for name, (report, saved) in results.items():
        original = load(name)
        assert report["missing"] == [] and report["count"] == len(original["nodes"]), (version, name)
        ours = ui_to_api(original, info)
        assert set(saved["output"]) == set(ours), (version, name)
        for key, node in saved["output"].items():  # the frontend's own preview widgets (video-preview) ride along
            declared = {n for n, _, _ in ordered_inputs(info[node["class_type"]])}  # and are ignored
            theirs = {k: v for k, v in node["inputs"].items() if k in declared}
            assert (node["class_type"], theirs) == (ours[key]["class_type"], ours[key]["inputs"]), (version, name, key)
        assert format_problems(saved["workflow"]) == [], (version, name)
        assert differences(original, saved["workflow"]) == [], (version, name)
        assert ui_to_api(saved["workflow"], info) == ours, (version, name)
    assert not problems, (version, problems)


def test_templates_are_served(server):
    """``/workflow_templates`` lists exactly the six templates; each JSON and thumbnail is served."""
    from urllib.parse import quote

    with urllib.request.urlopen(server["url"] + "/workflow_templates", timeout=10) as response:
        listed = json.loads(response.read())["fiffdepth"]
    assert sorted(listed) == sorted(NAMES)
    for name in NAMES:
        for ext in (".json", ".jpg"):
            with urllib.request.urlopen(f"{server['url']}/api/workflow_templates/fiffdepth/{quote(name + ext)}",
                                        timeout=10) as response:
                assert response.status == 200 and response.read(), (name, ext)


def test_template_browser_shows_titled_cards(frontend_server):
    """In each frontend's template browser the pack's cards carry the human titles in the server's order, every
    thumbnail loads, and nothing the frontend lays over a thumbnail covers more than its plain top strip."""
    import frontend
    from template_browser import read_browser

    if frontend.chromium_path() is None:
        pytest.skip("no chromium on PATH (apt-get install chromium) for the template browser")
    with urllib.request.urlopen(frontend_server["url"] + "/workflow_templates", timeout=10) as response:
        listed = json.loads(response.read())["fiffdepth"]

    async def browse():
        async with frontend.browser_page(1600, 1000) as page:
            await frontend.open_app(page, frontend_server["url"])
            return await frontend.frontend_version(page), await read_browser(page, "fiffdepth", listed)

    version, cards = frontend.run(browse())
    assert [card["title"] for card in cards] == listed, version  # the server's order; newer servers sort by name
    for card in cards:
        assert card["loaded"] and card["natural"] == [512, 512], (version, card)
        for overlay in card["overlays"]:
            assert overlay["y1"] <= 64, (version, card["title"], overlay)  # the strip test_workflows.py keeps plain


def test_registry_package_installs_and_runs(tmp_path):
    """The registry zip (``comfy node pack`` where comfy-cli is installed, else built the same way by
    ``tools/registry_package.py``) unpacked into a fresh ``custom_nodes/``: ComfyUI lists the nodes and the
    templates, and workflow 1 runs."""
    import importlib.util
    import zipfile

    from registry_package import build, comfy_cli, comfy_node_pack, copy_repository

    if comfy_cli():
        package = comfy_node_pack(copy_repository(tmp_path / "repo"), comfy_cli())
    elif importlib.util.find_spec("pathspec"):
        build(package := tmp_path / "node.zip")
    else:
        pytest.skip("neither comfy-cli (COMFY_CLI) nor pathspec is installed to build the registry package")
    print(f"registry package: {package.stat().st_size} bytes")
    base = tmp_path / "comfy"
    with zipfile.ZipFile(package) as archive:
        archive.extractall(base / "custom_nodes" / "fiffdepth")
    assert not (base / "custom_nodes" / "fiffdepth" / "tests").exists()
    pixels, checkpoint, family = prepare_base(base)
    with comfy_server(base, pack=None) as url:
        info = object_info(url)
        assert {"FiffDepthLoader", "FiffDepthEstimate", "FiffDepthSave", "FiffDepthColorize",
                "FiffDepthDepthLatent"} <= set(info)
        log = (base / "server.log").read_text()
        assert not [line for line in log.splitlines() if "IMPORT FAILED" in line and "fiffdepth" in line], log[-3000:]
        with urllib.request.urlopen(url + "/workflow_templates", timeout=10) as response:
            assert sorted(json.loads(response.read())["fiffdepth"]) == sorted(NAMES)
        run_image_workflow({"url": url, "base": base, "info": info, "pixels": pixels, "checkpoint": checkpoint,
                            "family": family})
