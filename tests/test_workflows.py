"""The bundled workflows (``workflows/*.json``, served by ComfyUI as templates), checked without ComfyUI (CI).

Each file is well-formed UI-format JSON whose link table agrees with the node slots, uses only core nodes and this
pack's nodes, matches this pack's node schemas (taken from the real ``define_schema()`` through
``pack_schemas.py``), connects matching types, has positions and sizes the frontend can draw, names every model file
it needs and has a way to get it (the loader downloads it, or the frontend's missing-models dialog offers it), and
has its thumbnail. Every check also runs on the same workflows as real frontends export them
(``tests/data/frontend_exports/<version>/``: the pinned 1.27 and the newest 1.5x), which must mean the same as the
bundled files; a changed widget value or a broken link in such an export is refused. The UI -> API converter is
unit-tested on a synthetic graph. ``test_workflows_comfyui.py`` checks the same files against a real ComfyUI.
"""

from __future__ import annotations

import build_workflows
import pytest
import wan_workflow
from bundled_workflows import (
    BUNDLED,
    CORE_NODES,
    EXPORT_DIR,
    LOADERS,
    NAMES,
    PACK_NODES,
    SOURCES,
    WORKFLOW_DIR,
    by_id,
    check_widget_value,
    linked_widgets,
    load,
    notes_text,
    of_type,
    source_of,
)
from pack_schemas import pack_object_info
from workflow_api import (
    input_slots,
    ordered_inputs,
    output_slots,
    saved_inputs,
    ui_to_api,
    widget_layout,
    widget_values,
)
from workflow_format import differences, format_problems, widgets

from fiffdepth_core.weights.catalogue import COMFY_CORE_FILES, DEFAULT_ID, find_model, get_model


@pytest.fixture(scope="module")
def pack_info():
    return pack_object_info()


@pytest.fixture(params=[(source, name) for source in SOURCES for name in NAMES], ids="{0[0]}-{0[1]}".format)
def workflow(request):
    source, name = request.param
    return f"{name} ({source})", load(name, source)


def test_templates_and_thumbnails_are_all_there():
    """ComfyUI serves the whole folder: nothing but the templates and their thumbnails. Template browsers title a
    pack's template with its file name and list them in the server's order (sorted by name in newer ComfyUI), so the
    names are titles, numbered in the order they are meant to be read."""
    import numpy as np
    from PIL import Image

    assert sorted(p.name for p in WORKFLOW_DIR.iterdir()) == sorted(f"{n}{ext}" for n in NAMES
                                                                     for ext in (".json", ".jpg")), \
        "workflows/ is served as templates: keep everything else (tools, other JSON, caches) elsewhere"
    assert list(NAMES) == sorted(NAMES)
    assert all(name.startswith(f"FiffDepth {i} - ") and len(name) <= 31 for i, name in enumerate(NAMES, 1)), NAMES
    for name in NAMES:
        with Image.open(WORKFLOW_DIR / f"{name}.jpg") as thumb:
            assert thumb.format == "JPEG" and thumb.size == (512, 512), (name, thumb.format, thumb.size)
            # Frontends 1.5x lay a "Node graph" badge over the top-left corner (measured: x 16-200, y 8-56 of
            # 512): the whole top strip stays plain (JPEG noise only).
            strip = np.asarray(thumb.convert("RGB"), dtype=np.int16)[:64]
        assert (strip.max(axis=(0, 1)) - strip.min(axis=(0, 1))).max() <= 12, f"{name}: the top strip is not plain"


def test_exports_of_every_frontend_are_there():
    """The pinned frontend (1.27.10, what ComfyUI 0.3.64 requires) and at least one 1.5x frontend exported every
    bundled workflow (tools/export_workflows.py)."""
    versions = SOURCES[1:]
    assert "1.27.10" in versions and any(v.startswith("1.5") for v in versions), versions
    for version in versions:
        assert sorted(p.stem for p in (EXPORT_DIR / version).glob("*.json")) == sorted(NAMES), version


def test_ui_format_is_consistent(workflow):
    """Every node runs, except workflow 1's filtered row: the t = -1 pass exists only for FiffDepth checkpoints, so
    with the catalogue model the loader starts on it is muted (mode 2, left out of the prompt) until the user
    un-mutes it."""
    name, wf = workflow
    assert format_problems(wf) == [], name
    muted = muted_filtered_row(wf) if name.startswith(NAMES[0]) else set()
    for node in wf["nodes"]:
        assert node["mode"] == (2 if node["id"] in muted else 0), f"{name}: node {node['id']} mode {node['mode']}"


def muted_filtered_row(wf: dict) -> set[int]:
    """The ids of the filtered Estimate of workflow 1 and of every node downstream of it."""
    (filtered,) = [node for node in of_type(wf, "FiffDepthEstimate") if "filtered" in widgets(node)]
    row, grew = {filtered["id"]}, True
    while grew:
        grew = False
        for link in wf["links"]:
            if link[1] in row and link[3] not in row:
                row.add(link[3])
                grew = True
    assert len(row) == 5, row  # the Estimate, Colorize, Save and two previews
    return row


@pytest.mark.parametrize("source", SOURCES[1:])
@pytest.mark.parametrize("name", NAMES)
def test_frontend_exports_mean_the_bundled_workflows(name, source):
    """What a frontend saves differs in form (order, absent widgets_values, widgets_values_named, group font_size,
    ids) but not in meaning; after changing a workflow, re-export it with tools/export_workflows.py."""
    export = load(name, source)
    assert differences(load(name), export) == [], f"{name}: the {source} export differs from workflows/"
    assert export["extra"].get("frontendVersion") == source


def test_damage_in_a_frontend_export_is_refused():
    """The checks that accept every frontend's form still refuse a changed widget value, named and positional
    values that disagree (two frontends would run different values), and broken links."""
    import copy

    newest = SOURCES[-1]
    export = load(NAMES[1], newest)
    (sampler,) = of_type(export, "KSampler")
    assert "widgets_values_named" in sampler, f"the {newest} export has no widgets_values_named: re-check the premise"
    assert [n for n in export["nodes"] if "widgets_values" not in n], "no node without widgets_values"

    changed = copy.deepcopy(export)  # an edit made consistently: well formed, but not what ships
    (node,) = of_type(changed, "KSampler")
    node["widgets_values"][2] += 1
    node["widgets_values_named"]["steps"] += 1
    assert format_problems(changed) == []
    assert differences(load(NAMES[1]), changed) == [f"node {node['id']} (KSampler) widgets_values[2]: 25 -> 26"]

    named_only = copy.deepcopy(export)
    (node,) = of_type(named_only, "KSampler")
    node["widgets_values_named"]["cfg"] = 3.5
    assert any("disagrees with widgets_values" in line for line in format_problems(named_only))

    rerouted = copy.deepcopy(export)  # the negative prompt's link now claims the positive input
    link = next(link for link in rerouted["links"] if link[5] == "CONDITIONING" and link[4] == 1)
    link[4] = 0
    assert any(f"does not hold link {link[0]}" in line for line in format_problems(rerouted))
    assert differences(export, rerouted)

    dropped = copy.deepcopy(export)  # a link the table lists but its source output has lost
    out = next(o for n in dropped["nodes"] for o in n["outputs"] if o.get("links"))
    lost = out["links"].pop()
    assert any(f"link {lost} is missing from node" in line for line in format_problems(dropped))

    dangling = copy.deepcopy(export)
    dangling["links"] = [link for link in dangling["links"] if link[0] != lost]
    assert any(f"holds link {lost}, which is not in the link table" in line for line in format_problems(dangling))

    backwards = copy.deepcopy(export)  # any order is fine as long as every link runs forwards
    first = backwards["links"][0]
    nodes = by_id(backwards)
    nodes[first[1]]["order"], nodes[first[3]]["order"] = nodes[first[3]]["order"], nodes[first[1]]["order"]
    assert any(f"link {first[0]} runs against the order" in line for line in format_problems(backwards))

    no_widgets = copy.deepcopy(export)  # absent means "no widgets": on a node that has some, its values are lost
    (estimate,) = of_type(no_widgets, "FiffDepthEstimate")
    del estimate["widgets_values"], estimate["widgets_values_named"]
    assert widgets(estimate) == [] and format_problems(no_widgets) == []
    assert [line.split(":")[0] for line in differences(export, no_widgets)] == \
        [f"node {estimate['id']} (FiffDepthEstimate) widgets_values"]


def test_only_core_and_pack_nodes(workflow):
    name, wf = workflow
    unknown = {node["type"] for node in wf["nodes"]} - CORE_NODES - PACK_NODES
    assert not unknown, f"{name} uses nodes that are neither core nor this pack's: {unknown}"


def test_pack_nodes_match_their_schemas(workflow, pack_info):
    name, wf = workflow
    assert set(pack_info) == PACK_NODES
    for node in wf["nodes"]:
        info = pack_info.get(node["type"])
        if info is None:
            continue
        where = f"{name}: node {node['id']} ({node['type']})"
        expected = saved_inputs(info, linked_widgets(node))
        got = [(s["name"], s["type"], bool(s.get("widget"))) for s in node["inputs"]]
        assert got == [(s.name, s.type, s.widget) for s in expected], f"{where} inputs"
        assert [(o["name"], o["type"]) for o in node["outputs"]] == output_slots(info), f"{where} outputs"
        values = widget_values(node, info)  # raises on a wrong count
        specs = {n: spec for n, spec, _ in ordered_inputs(info)}
        for input_name, value in values.items():
            if LOADERS.get(node["type"], (None, None))[1] == input_name:  # a model list: the files present decide
                assert isinstance(value, str), f"{where}: {input_name}={value!r}"  # (and the catalogue's downloads)
                continue
            check_widget_value(where, input_name, specs[input_name], value)


def test_layout_is_well_formed(workflow):
    """Positions and sizes are what the frontend needs to draw the graph; where things sit is left to the author."""
    name, wf = workflow

    def numbers(value, count):
        return (isinstance(value, list) and len(value) == count
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))

    for node in wf["nodes"]:
        assert numbers(node["pos"], 2), f"{name}: node {node['id']} pos {node['pos']!r}"
        assert numbers(node["size"], 2) and min(node["size"]) > 0, f"{name}: node {node['id']} size {node['size']!r}"
    for group in wf["groups"]:
        assert isinstance(group.get("title"), str) and numbers(group.get("bounding"), 4), f"{name}: group {group!r}"


def test_notes_say_which_files_go_where(workflow):
    """Every model file a loader needs is named with its folder, and the FiffDepth checkpoint's origin is given;
    the wording is free."""
    name, wf = workflow
    text = notes_text(wf)
    assert "train/finetune.py" in text, f"{name}: the notes do not say how to make a FiffDepth checkpoint"
    loaders = [node for node in wf["nodes"] if node["type"] in LOADERS]
    assert loaders, f"{name} loads no model"
    for node in loaders:
        folder, widget = LOADERS[node["type"]]
        file_name = node["widgets_values"][0]  # every loader's first widget is its file
        model = find_model(file_name) if node["type"] == "FiffDepthLoader" else None
        if model is not None:  # a catalogue model: the folder the first run downloads it into
            assert f"models/{folder}/{model.id}/" in text, f"{name}: the note does not say where {model.id} goes"
        assert f"models/{folder}/" in text and file_name in text, f"{name}: the note does not place {file_name}"
    for node in wf["nodes"]:
        for model in node["properties"].get("models", []):
            assert model["name"] == node["widgets_values"][0] and model["url"].startswith("https://huggingface.co/")
            assert model["directory"] == LOADERS[node["type"]][0]


def test_every_model_a_template_needs_can_be_fetched(workflow):
    """Nothing a template needs is 'missing' without a way to get it: every loader either carries the frontend's
    model metadata (``properties.models``: name, url, folder), which its missing-models dialog offers for download,
    with the URL and folder of the builder's table (the catalogue's, for core's Lotus files), or is a FiffDepthLoader
    on the catalogue's default model under its menu label, which the node downloads itself on the first run (the
    dialog cannot fetch a multi-file model folder). Workflow 5 loads the single files core's own Lotus template
    loads."""
    name, wf = workflow
    table = {**build_workflows.MODELS, **wan_workflow.MODELS}
    core = {f.name: f for files in COMFY_CORE_FILES.values() for f in files}
    for node in wf["nodes"]:
        if node["type"] not in LOADERS:
            continue
        where = f"{name}: node {node['id']} ({node['type']})"
        value = node["widgets_values"][0]
        if node["type"] == "FiffDepthLoader":
            assert value == get_model(DEFAULT_ID).label, f"{where}: {value!r} is not the catalogue's default model"
            assert "models" not in node["properties"], where  # a folder: nothing the frontend could download
            continue
        assert node["properties"].get("models"), f"{where}: no download metadata for {value!r}"
        (entry,) = node["properties"]["models"]
        assert entry["name"] == value and value in table, where
        assert (entry["url"], entry["directory"]) == table[value], where
        assert entry["directory"] == LOADERS[node["type"]][0], where
        if value in core:
            assert (entry["url"], entry["directory"]) == (core[value].url, core[value].directory), where
    if name == NAMES[4]:
        files = {node["widgets_values"][0] for node in wf["nodes"] if node["type"] in ("UNETLoader", "VAELoader")}
        assert files == {f.name for f in COMFY_CORE_FILES["lotus-depth-d-v1-1"]}, files


@pytest.mark.parametrize("source", SOURCES)
def test_each_workflow_does_its_job(pack_info, source):
    def estimate_inputs(wf):
        return [widget_values(node, pack_info["FiffDepthEstimate"]) for node in of_type(wf, "FiffDepthEstimate")]

    wf = load(NAMES[0], source)
    assert sorted(v["depth_pass"] for v in estimate_inputs(wf)) == ["detailed", "filtered"]
    runs = {node["id"] for node in wf["nodes"] if node["mode"] == 0}  # the filtered row waits for a FiffDepth model
    assert [v["depth_pass"] for node, v in zip(of_type(wf, "FiffDepthEstimate"), estimate_inputs(wf))
            if node["id"] in runs] == ["detailed"]
    saves = of_type(wf, "FiffDepthSave")
    assert len(saves) == 2 and all(node["widgets_values"][1] == "png16" for node in saves)
    assert {source_of(wf, node, "depth")[0]["id"] for node in saves} == \
        {node["id"] for node in of_type(wf, "FiffDepthEstimate")}
    assert of_type(wf, "FiffDepthColorize") and of_type(wf, "PreviewImage")

    for name, family in ((NAMES[1], "sd15"), (NAMES[2], "xl")):
        wf = load(name, source)
        apply = of_type(wf, "ControlNetApplyAdvanced")[0]
        hint, _ = source_of(wf, apply, "image")
        assert hint["type"] == "ImageScaleToTotalPixels"
        assert source_of(wf, hint, "image")[0]["type"] == "FiffDepthEstimate"
        assert family in source_of(wf, apply, "control_net")[0]["widgets_values"][0]
        latent = of_type(wf, "EmptyLatentImage")[0]
        assert {source_of(wf, latent, side)[0]["type"] for side in ("width", "height")} == {"GetImageSize"}
        sampler = of_type(wf, "KSampler")[0]
        assert source_of(wf, sampler, "positive")[0] is apply and source_of(wf, sampler, "latent_image")[0] is latent
        assert of_type(wf, "SaveImage") and of_type(wf, "CheckpointLoaderSimple")

    wf = load(NAMES[3], source)
    (values,) = estimate_inputs(wf)
    assert values["normalization"] == "whole_batch" and values["temporal"] == "stabilize"
    est = of_type(wf, "FiffDepthEstimate")[0]
    frames, _ = source_of(wf, est, "image")
    assert frames["type"] == "GetVideoComponents" and source_of(wf, frames, "video")[0]["type"] == "LoadVideo"
    assert of_type(wf, "SaveImage") and of_type(wf, "FiffDepthSave")

    wf = load(NAMES[5], source)  # video -> steady depth -> Wan VACE's control video
    (values,) = estimate_inputs(wf)
    assert values["temporal"] == "stabilize" and values["normalization"] == "whole_batch"
    est = of_type(wf, "FiffDepthEstimate")[0]
    assert source_of(wf, source_of(wf, est, "image")[0], "video")[0]["type"] == "LoadVideo"
    vace = of_type(wf, "WanVaceToVideo")[0]
    scale, _ = source_of(wf, vace, "control_video")
    assert scale["type"] == "ImageScale" and source_of(wf, scale, "image") == (est, 0)  # the controlnet output
    assert scale["widgets_values"][1:3] == [vace["widgets_values"][0], vace["widgets_values"][1]]  # 832 x 480
    sampler = of_type(wf, "KSampler")[0]
    assert source_of(wf, sampler, "latent_image")[0] is vace and source_of(wf, sampler, "positive")[0] is vace
    trim = of_type(wf, "TrimVideoLatent")[0]
    assert source_of(wf, trim, "trim_amount") == (vace, 3) and of_type(wf, "SaveVideo")

    wf = load(NAMES[4], source)
    est = of_type(wf, "FiffDepthEstimate")[0]
    assert not of_type(wf, "FiffDepthLoader")
    assert [source_of(wf, est, n)[0]["type"] for n in ("model", "vae", "conditioning")] == \
        ["UNETLoader", "VAELoader", "LotusConditioning"]


# A small synthetic node set for the converter's rules.
SYNTHETIC_INFO = {
    "Src": {"input": {"required": {}}, "output": ["IMAGE", "INT"], "output_name": ["IMAGE", "count"]},
    "Dst": {"input": {"required": {"image": ["IMAGE"], "seed": ["INT", {"default": 0}],
                                   "steps": ["INT", {"default": 20}], "mode": [["a", "b"]]},
                      "optional": {"mask": ["MASK"], "flag": ["BOOLEAN", {"default": False}]}},
            "input_order": {"required": ["image", "seed", "steps", "mode"], "optional": ["mask", "flag"]},
            "output": ["IMAGE"], "output_name": ["IMAGE"]},
    "Up": {"input": {"required": {"file": ["COMBO", {"options": ["x.png"], "image_upload": True}]}},
           "output": ["IMAGE"], "output_name": ["IMAGE"]},
    "Pass": {"input": {"required": {"image": ["IMAGE"], "noise_seed": ["INT", {"control_after_generate": False}]}},
             "output": ["IMAGE"], "output_name": ["IMAGE"]},
}


def synthetic_workflow() -> dict:
    def node(node_id, type_, inputs=(), outputs=(), widgets=(), mode=0):
        return {"id": node_id, "type": type_, "mode": mode, "inputs": list(inputs), "outputs": list(outputs),
                "widgets_values": list(widgets)}

    return {"nodes": [
        node(1, "Src", outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [1]},
                                {"name": "count", "type": "INT", "links": [5]}]),
        node(2, "Reroute", inputs=[{"name": "", "type": "*", "link": 1}], outputs=[{"type": "IMAGE", "links": [2]}]),
        node(3, "Pass", inputs=[{"name": "image", "type": "IMAGE", "link": 2}], widgets=[7],
             outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [3]}], mode=4),
        node(4, "Dst", inputs=[{"name": "image", "type": "IMAGE", "link": 3},
                               {"name": "mask", "type": "MASK", "link": None},
                               {"name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": 4},
                               {"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": 5}],
             widgets=[5, "randomize", 30, "b", True], outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [6]}]),
        node(5, "PrimitiveNode", outputs=[{"name": "INT", "type": "INT", "links": [4]}], widgets=[42, "fixed"]),
        node(6, "Up", widgets=["x.png", "image"]),
        node(7, "Dst", inputs=[{"name": "image", "type": "IMAGE", "link": 6}], widgets=[1, "fixed", 2, "a", False],
             mode=2),
        node(8, "Note", widgets=["hello"]),
    ], "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"], [3, 3, 0, 4, 0, "IMAGE"],
                 [4, 5, 0, 4, 2, "INT"], [5, 1, 1, 4, 3, "INT"], [6, 4, 0, 7, 0, "IMAGE"]]}


def test_converter_follows_the_frontend_rules():
    assert widget_layout(SYNTHETIC_INFO["Dst"]) == ["seed", None, "steps", "mode", "flag"]
    assert widget_layout(SYNTHETIC_INFO["Up"]) == ["file", None]
    assert widget_layout(SYNTHETIC_INFO["Pass"]) == ["noise_seed"]  # control_after_generate: False wins
    assert [s.name for s in input_slots(SYNTHETIC_INFO["Dst"])] == ["image", "mask", "seed", "steps", "mode", "flag"]
    prompt = ui_to_api(synthetic_workflow(), SYNTHETIC_INFO)
    assert sorted(prompt) == ["1", "4", "6"]  # Reroute, bypassed, muted and Note nodes are left out
    assert prompt["4"]["inputs"] == {"image": ["1", 0], "seed": ["1", 1], "steps": 42, "mode": "b", "flag": True}
    assert prompt["6"]["inputs"] == {"file": "x.png"}
    bad = synthetic_workflow()
    bad["nodes"][3]["widgets_values"].append("surplus")
    with pytest.raises(ValueError, match="widgets_values"):
        ui_to_api(bad, SYNTHETIC_INFO)


def test_converter_gives_widgets_a_newer_server_added_their_defaults():
    """Saved before the server grew a widget (as core's ImageScaleToTotalPixels grew ``resolution_steps``): the
    frontend keeps the new widget's default, and so does the converter; a new widget without a default is an error."""
    newer = {**SYNTHETIC_INFO, "Dst": {**SYNTHETIC_INFO["Dst"], "input": {
        "required": {**SYNTHETIC_INFO["Dst"]["input"]["required"], "steps2": ["INT", {"default": 3}]},
        "optional": {**SYNTHETIC_INFO["Dst"]["input"]["optional"], "extra": [["p", "q"]]}},
        "input_order": {"required": ["image", "seed", "steps", "mode", "steps2"],
                        "optional": ["mask", "flag", "extra"]}}}
    wf = synthetic_workflow()
    wf["nodes"][3]["widgets_values"] = [5, "randomize", 30, "b"]  # saved by an older server: no flag either
    prompt = ui_to_api(wf, newer)
    assert prompt["4"]["inputs"]["steps2"] == 3 and prompt["4"]["inputs"]["extra"] == "p"
    assert prompt["4"]["inputs"]["mode"] == "b" and prompt["4"]["inputs"]["flag"] is False
    no_default = {**newer, "Dst": {**newer["Dst"], "input": {**newer["Dst"]["input"], "required": {
        **newer["Dst"]["input"]["required"], "steps2": ["INT", {}]}}}}
    with pytest.raises(ValueError, match="'steps2' is missing"):
        ui_to_api(wf, no_default)
