"""The bundled workflows (``workflows/*.json``) and what the tests know about them: names, the node types they
may use, the loaders' model folders, and small graph helpers shared by the offline and the real-host tests.

``tests/data/frontend_exports/<frontend version>/`` holds the same workflows as real ComfyUI frontends export them
(written by ``tools/export_workflows.py``): the offline tests run every check on those too."""

from __future__ import annotations

import json

import numpy as np
from comfy_host import PACK_ROOT
from workflow_api import NOTE_NODES, VIRTUAL_NODES, combo_values, spec_options, spec_type

WORKFLOW_DIR = PACK_ROOT / "workflows"
EXPORT_DIR = PACK_ROOT / "tests" / "data" / "frontend_exports"
BUNDLED = "bundled"
# Where a workflow comes from: the shipped file, or its export by one frontend version (oldest first).
SOURCES = (BUNDLED, *sorted((p.name for p in EXPORT_DIR.iterdir() if p.is_dir()),
                            key=lambda v: tuple(int(x) for x in v.split("."))))
NAMES = ("FiffDepth 1 - Image to depth", "FiffDepth 2 - SD1.5 ControlNet", "FiffDepth 3 - SDXL ControlNet",
         "FiffDepth 4 - Video to depth", "FiffDepth 5 - Core loaders", "FiffDepth 6 - Wan VACE video")
PACK_NODES = frozenset({"FiffDepthLoader", "FiffDepthEstimate", "FiffDepthSave", "FiffDepthColorize",
                        "FiffDepthDepthLatent"})
CORE_NODES = frozenset({
    "LoadImage", "PreviewImage", "SaveImage", "CheckpointLoaderSimple", "ControlNetLoader", "ControlNetApplyAdvanced",
    "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode", "ImageScaleToTotalPixels", "GetImageSize",
    "LoadVideo", "GetVideoComponents", "CreateVideo", "SaveVideo", "UNETLoader", "VAELoader", "CLIPLoader",
    "LotusConditioning", "ImageScale", "ModelSamplingSD3", "WanVaceToVideo", "TrimVideoLatent",
}) | VIRTUAL_NODES
# loader -> (model folder under ComfyUI/models, widget holding the file name)
LOADERS = {"FiffDepthLoader": ("fiffdepth", "model_name"), "CheckpointLoaderSimple": ("checkpoints", "ckpt_name"),
           "ControlNetLoader": ("controlnet", "control_net_name"), "UNETLoader": ("diffusion_models", "unet_name"),
           "VAELoader": ("vae", "vae_name"), "CLIPLoader": ("text_encoders", "clip_name")}


def load(name: str, source: str = BUNDLED) -> dict:
    folder = WORKFLOW_DIR if source == BUNDLED else EXPORT_DIR / source
    return json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))


def by_id(wf: dict) -> dict[int, dict]:
    return {node["id"]: node for node in wf["nodes"]}


def of_type(wf: dict, node_type: str) -> list[dict]:
    return [node for node in wf["nodes"] if node["type"] == node_type]


def linked_widgets(node: dict) -> set[str]:
    return {slot["name"] for slot in node.get("inputs", []) if slot.get("widget") and slot.get("link") is not None}


def source_of(wf: dict, node: dict, input_name: str) -> tuple[dict, int]:
    """The node and output slot feeding a named input."""
    link_id = next(slot["link"] for slot in node["inputs"] if slot["name"] == input_name)
    link = next(link for link in wf["links"] if link[0] == link_id)
    return by_id(wf)[link[1]], link[2]


def notes_text(wf: dict) -> str:
    return "\n".join(str(node["widgets_values"][0]) for node in wf["nodes"] if node["type"] in NOTE_NODES)


def check_widget_value(where: str, name: str, spec, value) -> None:
    kind, options = spec_type(spec), spec_options(spec)
    if kind == "COMBO":
        choices = combo_values(spec)
        if choices:  # model lists are empty without model files
            assert value in choices, f"{where}: {name}={value!r} not in {choices}"
        assert isinstance(value, str), f"{where}: {name}={value!r}"
    elif kind in ("INT", "FLOAT"):
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: {name}={value!r}"
        if kind == "INT":
            assert value == int(value), f"{where}: {name}={value!r} is not an integer"
        assert options.get("min", -np.inf) <= value <= options.get("max", np.inf), f"{where}: {name}={value!r}"
    elif kind == "STRING":
        assert isinstance(value, str), f"{where}: {name}={value!r}"
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), f"{where}: {name}={value!r}"
