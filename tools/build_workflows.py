"""Writes the bundled FiffDepth workflows (``workflows/*.json``, UI format) from the layouts below.

Slots, widget order and link indices come from a running ComfyUI's ``/object_info`` through the same rules the
tests check (``workflow_api.py`` beside this script), so each file is what ComfyUI's frontend itself saves. Node sizes are at
least the frontend's own minimum (measured once with it: pass ``--fit`` with Chromium installed).

    COMFYUI_PATH=/path/to/ComfyUI python tools/build_workflows.py [--fit]

The JSON files are what ships; editing them in ComfyUI and exporting is fine too, as long as
``tests/test_workflows.py`` passes. Re-run ``make_thumbnails.py`` after any change.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import wan_workflow  # beside this script, like workflow_api
from workflow_api import (
    combo_values,
    input_slots,
    ordered_inputs,
    output_slots,
    saved_inputs,
    spec_options,
    spec_type,
    widget_layout,
)

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"
sys.path.insert(0, str(ROOT))  # the pack's catalogue: the models the templates default to
from fiffdepth_core.weights.catalogue import COMFY_CORE_FILES, DEFAULT_ID, get_model  # noqa: E402

NOTE_COLOR, NOTE_BGCOLOR = "#432", "#653"
GROUP_COLORS = {"load": "#3f789e", "depth": "#8A8", "alt": "#b58b2a", "gen": "#88A", "out": "#a1309b"}
TITLE_H = 30  # LiteGraph.NODE_TITLE_HEIGHT: a node's title bar sits above its pos
SLOT_H, WIDGET_H = 20, 24


class Node:
    def __init__(self, graph, node_id, type_, pos, size, widgets, title, properties, color, bgcolor):
        self.graph, self.id, self.type = graph, node_id, type_
        self.pos, self.size, self.widgets = list(pos), list(size) if size else None, dict(widgets)
        self.title, self.properties, self.color, self.bgcolor = title, properties, color, bgcolor
        self.mode = 0  # LiteGraph's: 0 runs, 2 is muted ("Never": left out of the prompt until un-muted)


class Graph:
    """A UI-format workflow under construction; node definitions come from ``/object_info``."""

    def __init__(self, object_info: dict):
        self.info, self.nodes, self.links, self.groups = object_info, [], [], []

    def add(self, type_, pos, size=None, title=None, models=None, color=None, bgcolor=None, **widgets) -> Node:
        if type_ not in ("MarkdownNote", "Note") and type_ not in self.info:
            raise KeyError(f"{type_} is not a node type of this ComfyUI")
        properties = {} if type_ in ("MarkdownNote", "Note") else {"Node name for S&R": type_}
        if models:
            properties["models"] = models
        node = Node(self, len(self.nodes) + 1, type_, pos, size, widgets, title, properties, color, bgcolor)
        self.nodes.append(node)
        return node

    def note(self, text, pos, size) -> Node:
        return self.add("MarkdownNote", pos, size, title="Read me: models and settings", color=NOTE_COLOR,
                        bgcolor=NOTE_BGCOLOR, text=text)

    def link(self, src: Node, output: str | int, dst: Node, input_name: str) -> None:
        outputs = output_slots(self.info[src.type])
        slot = output if isinstance(output, int) else [name for name, _ in outputs].index(output)
        dst_slots = {s.name: s for s in input_slots(self.info[dst.type])}
        if input_name not in dst_slots:
            raise KeyError(f"{dst.type} has no input {input_name!r}")
        src_type, dst_type = outputs[slot][1], dst_slots[input_name].type
        if src_type != dst_type:
            raise TypeError(f"{src.type}.{outputs[slot][0]} ({src_type}) -> {dst.type}.{input_name} ({dst_type})")
        self.links.append((len(self.links) + 1, src, slot, dst, input_name, src_type))

    def group(self, title, nodes, color, pad=16):
        x0 = min(n.pos[0] for n in nodes) - pad
        y0 = min(n.pos[1] - TITLE_H for n in nodes) - pad - 34
        x1 = max(n.pos[0] + n.size[0] for n in nodes) + pad
        y1 = max(n.pos[1] + n.size[1] for n in nodes) + pad
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": [x0, y0, x1 - x0, y1 - y0],
                            "color": color, "font_size": 24, "flags": {}})

    # -- serialisation -------------------------------------------------------------------------------------------

    def _widget_values(self, node: Node) -> list:
        if node.type in ("MarkdownNote", "Note"):
            return [node.widgets["text"]]
        info = self.info[node.type]
        specs = {name: spec for name, spec, _ in ordered_inputs(info)}
        layout, values = widget_layout(info), []
        unknown = set(node.widgets) - {n for n in layout if n}
        if unknown:
            raise KeyError(f"{node.type} has no widgets {sorted(unknown)}")
        for index, name in enumerate(layout):
            if name is None:  # frontend-only: control_after_generate after an INT, else the upload button
                previous = layout[index - 1] if index else None
                values.append("randomize" if previous and specs[previous][0] == "INT" else "image")
                continue
            if name in node.widgets:
                values.append(node.widgets[name])
                continue
            options = spec_options(specs[name])
            choices = combo_values(specs[name]) if spec_type(specs[name]) == "COMBO" else []
            values.append(options.get("default", choices[0] if choices else None))
        return values

    def _order(self) -> dict[int, int]:
        """Execution order (the frontend's ``order``): a topological sort, sources first, ties by id."""
        deps = {n.id: set() for n in self.nodes}
        for _, src, _, dst, _, _ in self.links:
            deps[dst.id].add(src.id)
        order, done = {}, set()
        while len(done) < len(deps):
            ready = sorted(i for i in deps if i not in done and deps[i] <= done)
            if not ready:
                raise ValueError("cycle in the workflow")
            done.add(ready[0])
            order[ready[0]] = len(order)
        return order

    def default_size(self, node: Node) -> list[float]:
        """A LiteGraph-like size: one row per slot, one per widget (the layouts below give sizes explicitly)."""
        info = self.info[node.type]
        rows = max(len([s for s in input_slots(info) if not s.widget]), len(output_slots(info)), 1)
        return [315, rows * SLOT_H + len(widget_layout(info)) * WIDGET_H + 6]

    def to_json(self) -> dict:
        order = self._order()
        link_rows = []
        out_links: dict[tuple[int, int], list[int]] = {}
        in_links: dict[tuple[int, str], int] = {}
        for link_id, src, slot, dst, name, _ in self.links:
            out_links.setdefault((src.id, slot), []).append(link_id)
            in_links[(dst.id, name)] = link_id
        nodes = []
        for node in self.nodes:
            if node.size is None:
                node.size = self.default_size(node)
            entry = {"id": node.id, "type": node.type, "pos": node.pos, "size": node.size, "flags": {},
                     "order": order[node.id], "mode": node.mode, "inputs": [], "outputs": []}
            if node.type not in ("MarkdownNote", "Note"):
                info = self.info[node.type]
                linked = {name for (nid, name) in in_links if nid == node.id}
                for index, slot in enumerate(saved_inputs(info, linked)):
                    item = {"name": slot.name, "type": slot.type}
                    if slot.optional and not slot.widget:
                        item["shape"] = 7
                    if slot.widget:
                        item["widget"] = {"name": slot.name}
                    item["link"] = in_links.get((node.id, slot.name))
                    entry["inputs"].append(item)
                    if item["link"] is not None:
                        link_rows.append((item["link"], index))
                for index, (name, type_) in enumerate(output_slots(info)):
                    entry["outputs"].append({"name": name, "type": type_,
                                             "links": out_links.get((node.id, index), [])})
            if node.title:
                entry["title"] = node.title
            entry["properties"] = node.properties
            entry["widgets_values"] = self._widget_values(node)
            if node.color:
                entry["color"], entry["bgcolor"] = node.color, node.bgcolor
            nodes.append(entry)
        dst_slot = dict(link_rows)
        links = [[link_id, src.id, slot, dst.id, dst_slot[link_id], type_]
                 for link_id, src, slot, dst, _, type_ in self.links]
        x0 = min(min(n.pos[0] for n in self.nodes), *(g["bounding"][0] for g in self.groups))
        y0 = min(min(n.pos[1] - TITLE_H for n in self.nodes), *(g["bounding"][1] for g in self.groups))
        x1 = max(max(n.pos[0] + n.size[0] for n in self.nodes), *(g["bounding"][0] + g["bounding"][2]
                                                                   for g in self.groups))
        y1 = max(max(n.pos[1] + n.size[1] for n in self.nodes), *(g["bounding"][1] + g["bounding"][3]
                                                                  for g in self.groups))
        scale = round(min(1.0, 1500 / (x1 - x0), 820 / (y1 - y0)), 4)
        offset = [round(50 / scale - x0, 1), round(90 / scale - y0, 1)]
        return {"last_node_id": max(n.id for n in self.nodes), "last_link_id": len(self.links), "nodes": nodes,
                "links": links, "groups": self.groups, "config": {},
                "extra": {"ds": {"scale": scale, "offset": offset}}, "version": 0.4}


# -- the workflows ----------------------------------------------------------------------------------------------

FIFFDEPTH_CKPT = "fiffdepth.safetensors"  # the one-file bundle train/finetune.py exports (export.single_file)
FIFFDEPTH_UNET = "fiffdepth_unet.safetensors"  # workflow 5's suggested names for an export's UNet and VAE
FIFFDEPTH_VAE = "fiffdepth_vae.safetensors"
# FiffDepthLoader's default: the catalogue's default model under its menu label ("<id> (download <size>)"), so a fresh
# install runs a template in one click (the node downloads the model folder) and no file is "missing".
DEFAULT_MODEL = get_model(DEFAULT_ID)
DEPTH_MODEL = DEFAULT_MODEL.label
# Workflow 5's defaults: the single files ComfyUI core's own Lotus template loads, with the catalogue's URLs.
CORE_MODEL = get_model("lotus-depth-d-v1-1")
CORE_UNET, CORE_VAE = COMFY_CORE_FILES[CORE_MODEL.id]
SD15_CKPT = "v1-5-pruned-emaonly-fp16.safetensors"
SD15_CN = "control_v11f1p_sd15_depth_fp16.safetensors"
SDXL_CKPT = "sd_xl_base_1.0.safetensors"
SDXL_CN = "diffusers_xl_depth_full.safetensors"
MODELS = {
    SD15_CKPT: ("https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/"
                "v1-5-pruned-emaonly-fp16.safetensors?download=true", "checkpoints"),
    SD15_CN: ("https://huggingface.co/comfyanonymous/ControlNet-v1-1_fp16_safetensors/resolve/main/"
              "control_v11f1p_sd15_depth_fp16.safetensors?download=true", "controlnet"),
    SDXL_CKPT: ("https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/"
                "sd_xl_base_1.0.safetensors?download=true", "checkpoints"),
    SDXL_CN: ("https://huggingface.co/lllyasviel/sd_control_collection/resolve/main/"
              "diffusers_xl_depth_full.safetensors", "controlnet"),
    **{f.name: (f.url, f.directory) for f in (CORE_UNET, CORE_VAE)},
}


def models(name: str) -> list[dict]:
    url, folder = MODELS[name]
    return [{"name": name, "url": url, "directory": folder}]


DEPTH_NOTE = f"""**Depth model: nothing to install.** **FiffDepth Loader** starts on `{DEPTH_MODEL}` \
({DEFAULT_MODEL.title}, {DEFAULT_MODEL.licence}): the first run downloads it into \
`ComfyUI/models/fiffdepth/{DEFAULT_MODEL.id}/` (progress on the node), later runs load it from there. The list \
also offers the other public models (Lotus-D, Marigold-E2E-FT, GenPercept)."""

FIFFDEPTH_FILES = f"""**Your own FiffDepth checkpoint** instead (no official FiffDepth weights exist; train one \
with this pack's `train/finetune.py`): copy `RUN/export/{FIFFDEPTH_CKPT}` to `ComfyUI/models/fiffdepth/` (or the \
whole `RUN/export/` folder to `models/fiffdepth/<name>/`) and pick it in **FiffDepth Loader**, which also searches \
`models/geometry_estimation/`."""


def fiffdepth_tree(last: bool = True) -> tuple[str, ...]:  # the loader's folder in a tree()
    branch, stem = ("└──", " ") if last else ("├──", "│")
    return (f"    {branch} fiffdepth/", f"    {stem}   ├── {DEFAULT_MODEL.id}/  ← downloaded by the first run",
            f"    {stem}   └── {FIFFDEPTH_CKPT}  ← yours (optional)")


DEPTH_TIPS = """- `controlnet`: near = white, robustly normalised, at the input size: ready for depth ControlNets.
- `depth`: raw affine-invariant depth in [0, 1], 0 = near (for 3D / VFX).
- `processing_resolution`: long edge the model sees (768; 0 = native size). The output always has the \
input's size."""


def depth_note(title: str) -> str:  # the start of every depth template's Read-me: heading, model, your own checkpoint
    return f"## {title}\n\n" + DEPTH_NOTE + "\n\n" + FIFFDEPTH_FILES + "\n\n"


def tree(*lines: str) -> str:
    return "```\nComfyUI/\n└── models/\n" + "\n".join(lines) + "\n```"


def image_to_depth(info: dict) -> dict:
    g = Graph(info)
    g.note(depth_note("FiffDepth: image → depth") + tree(*fiffdepth_tree()) +
           "\n\n**Two passes of the same model**\n- **detailed** (t = 0): the paper's one-pass depth.\n- **filtered** "
           "(an extra t = −1 pass): smoother low-frequency depth. Only FiffDepth checkpoints have it, so its group "
           "starts muted: with your own checkpoint, select the group's nodes and press Ctrl+M to run it too.\n\n"
           + DEPTH_TIPS + "\n\n16-bit PNGs (depth × 65535) go to `output/FiffDepth/`; pick `npy` or `exr` in the "
           "save node for float32.", [-480, -30], [440, 560])
    image = g.add("LoadImage", [0, 182], [330, 420], image="example.png")
    loader = g.add("FiffDepthLoader", [0, 0], [330, 146], model_name=DEPTH_MODEL, precision="auto", family="auto")
    detailed = g.add("FiffDepthEstimate", [400, 0], [330, 258], title="FiffDepth Estimate (detailed, t = 0)",
                     depth_pass="detailed")
    filtered = g.add("FiffDepthEstimate", [400, 470], [330, 258], title="FiffDepth Estimate (filtered, t = −1)",
                     depth_pass="filtered")
    for est in (detailed, filtered):
        g.link(loader, "MODEL", est, "model")
        g.link(loader, "VAE", est, "vae")
        g.link(loader, "CONDITIONING", est, "conditioning")
        g.link(image, "IMAGE", est, "image")
    rows = []
    for est, y, tag in ((detailed, 0, "depth"), (filtered, 470, "depth_filtered")):
        colorize = g.add("FiffDepthColorize", [790, y], [270, 26])
        save = g.add("FiffDepthSave", [790, y + 86], [270, 82], filename_prefix=f"FiffDepth/{tag}", format="png16")
        cn_preview = g.add("PreviewImage", [1110, y], [300, 330], title="ControlNet map (near = white)")
        color_preview = g.add("PreviewImage", [1440, y], [300, 330], title="Depth, coloured (red = near)")
        g.link(est, "controlnet", cn_preview, "images")
        g.link(est, "depth", colorize, "depth")
        g.link(est, "depth", save, "depth")
        g.link(colorize, "image", color_preview, "images")
        rows.append((est, colorize, save, cn_preview, color_preview))
    g.group("Load", [loader, image], GROUP_COLORS["load"])
    g.group("Detailed depth (t = 0, the paper's output)", list(rows[0]), GROUP_COLORS["depth"])
    for node in rows[1]:  # the t = -1 pass exists only for FiffDepth checkpoints, not for the default model
        node.mode = 2
    g.group("Filtered depth (t = −1 pass, FiffDepth checkpoints only: muted, Ctrl+M)", list(rows[1]),
            GROUP_COLORS["alt"])
    return g.to_json()


def controlnet_workflow(info: dict, sdxl: bool) -> dict:
    g = Graph(info)
    ckpt, cn = (SDXL_CKPT, SDXL_CN) if sdxl else (SD15_CKPT, SD15_CN)
    family = "SDXL" if sdxl else "SD 1.5"
    megapixels = 1.0 if sdxl else 0.25
    alt = ("Other SDXL depth ControlNets work the same: `controlnet-depth-sdxl-1.0` (diffusers; rename its "
           "`diffusion_pytorch_model.safetensors`), `diffusers_xl_depth_mid` / `_small`, or any SDXL checkpoint."
           if sdxl else
           "`control_v11f1p_sd15_depth.pth` (the original) works too; any SD 1.5 checkpoint does.")
    g.note(depth_note(f"FiffDepth → {family} depth ControlNet") +
           f"**{family}** → `models/checkpoints/{ckpt}`\n\n**Depth ControlNet** → `models/controlnet/{cn}`\n\n"
           + alt + "\n\n" + tree("    ├── checkpoints/", f"    │   └── {ckpt}",
                                 "    ├── controlnet/", f"    │   └── {cn}",
                                 *fiffdepth_tree()) +
           f"\n\n**How it flows**: the depth map is computed at full quality, then scaled to ~{megapixels:g} MP "
           f"(native {family} size); the empty latent takes that size. Write your prompt, run.\n\n"
           "FiffDepth's maps are crisper than the MiDaS-era maps ControlNets were trained on: lower `strength` or "
           "`end_percent` if the result looks over-constrained.", [-480, -30], [440, 620])
    image = g.add("LoadImage", [0, 182], [330, 420], image="example.png")
    loader = g.add("FiffDepthLoader", [0, 0], [330, 146], model_name=DEPTH_MODEL, precision="auto", family="auto")
    est = g.add("FiffDepthEstimate", [400, 0], [330, 258])
    g.link(loader, "MODEL", est, "model")
    g.link(loader, "VAE", est, "vae")
    g.link(loader, "CONDITIONING", est, "conditioning")
    g.link(image, "IMAGE", est, "image")
    scale = g.add("ImageScaleToTotalPixels", [790, 0], [300, 82], title=f"Scale to {family} size",
                  upscale_method="area", megapixels=megapixels)
    size = g.add("GetImageSize", [790, 142], [300, 66])
    preview = g.add("PreviewImage", [790, 268], [300, 334], title="ControlNet map (near = white)")
    g.link(est, "controlnet", scale, "image")
    g.link(scale, "IMAGE", size, "image")
    g.link(scale, "IMAGE", preview, "images")

    y = 740
    ckpt_node = g.add("CheckpointLoaderSimple", [0, y], [330, 98], models=models(ckpt), ckpt_name=ckpt)
    cn_loader = g.add("ControlNetLoader", [0, y + 158], [330, 58], models=models(cn), control_net_name=cn)
    positive = g.add("CLIPTextEncode", [400, y], [400, 150], title="Positive prompt", color="#232",
                     bgcolor="#353", text="a detailed photograph of the scene, natural light, sharp focus, "
                                          "high quality")
    negative = g.add("CLIPTextEncode", [400, y + 210], [400, 120], title="Negative prompt", color="#322",
                     bgcolor="#533", text="blurry, low quality, deformed, watermark, text")
    apply = g.add("ControlNetApplyAdvanced", [870, y], [300, 186], strength=0.7 if sdxl else 0.9,
                  start_percent=0.0, end_percent=0.9 if sdxl else 1.0)
    latent = g.add("EmptyLatentImage", [870, y + 246], [300, 106], batch_size=1)
    sampler = g.add("KSampler", [1230, y], [315, 262], seed=0, steps=30 if sdxl else 25, cfg=6.0 if sdxl else 7.0,
                    sampler_name="dpmpp_2m", scheduler="karras", denoise=1.0)
    decode = g.add("VAEDecode", [1230, y + 322], [210, 46])
    save = g.add("SaveImage", [1600, y], [420, 480], filename_prefix=f"FiffDepth/{'sdxl' if sdxl else 'sd15'}")
    g.link(ckpt_node, "CLIP", positive, "clip")
    g.link(ckpt_node, "CLIP", negative, "clip")
    g.link(positive, "CONDITIONING", apply, "positive")
    g.link(negative, "CONDITIONING", apply, "negative")
    g.link(cn_loader, "CONTROL_NET", apply, "control_net")
    g.link(scale, "IMAGE", apply, "image")
    g.link(size, "width", latent, "width")
    g.link(size, "height", latent, "height")
    g.link(ckpt_node, "MODEL", sampler, "model")
    g.link(apply, "positive", sampler, "positive")
    g.link(apply, "negative", sampler, "negative")
    g.link(latent, "LATENT", sampler, "latent_image")
    g.link(sampler, "LATENT", decode, "samples")
    g.link(ckpt_node, "VAE", decode, "vae")
    g.link(decode, "IMAGE", save, "images")
    g.group("FiffDepth: image → ControlNet depth map", [loader, image, est, scale, size, preview],
            GROUP_COLORS["depth"])
    g.group(f"{family} + depth ControlNet", [ckpt_node, cn_loader, positive, negative, apply, latent, sampler,
                                             decode, save], GROUP_COLORS["gen"])
    return g.to_json()


def video_depth(info: dict) -> dict:
    g = Graph(info)
    g.note(depth_note("FiffDepth: video frames → depth (no flicker)") + tree(*fiffdepth_tree()) +
           "\n\n**Video** → `ComfyUI/input/` (or use the upload button of **Load Video**).\n\n"
           "`temporal = stabilize` treats the frames as one clip: each frame's depth is matched in scale and shift "
           "to a running reference (scene cuts restart it), then each pixel's small frame-to-frame jitter is "
           "averaged over a few frames while real motion passes at once, and the clip is rescaled as a whole to "
           "[0, 1]. (`align` does the first step only: each frame stays an exact affine map of the model's own "
           "output.) `normalization = whole_batch` normalises the ControlNet maps over all frames together. Every "
           "frame is held in memory: trim or downscale long videos first (the CLI, `python -m fiffdepth_core "
           "predict clip.mp4 --temporal stabilize`, streams any length). `batch_size` = "
           "frames per model call.\n\nSaved: ControlNet frames (PNG), raw 16-bit depth frames, and an MP4 of the "
           "ControlNet maps with the source's frame rate and sound.",
           [-480, -30], [440, 520])
    video = g.add("LoadVideo", [0, 182], [330, 420], file="example.mp4")
    frames = g.add("GetVideoComponents", [400, 182], [260, 66])
    loader = g.add("FiffDepthLoader", [0, 0], [330, 146], model_name=DEPTH_MODEL, precision="auto", family="auto")
    est = g.add("FiffDepthEstimate", [720, 0], [330, 258], title="FiffDepth Estimate (steady video depth)",
                batch_size=4, normalization="whole_batch", temporal="stabilize")
    g.link(video, "VIDEO", frames, "video")
    g.link(loader, "MODEL", est, "model")
    g.link(loader, "VAE", est, "vae")
    g.link(loader, "CONDITIONING", est, "conditioning")
    g.link(frames, "images", est, "image")
    save_cn = g.add("SaveImage", [1110, 0], [330, 330], filename_prefix="FiffDepth/video/controlnet")
    save_depth = g.add("FiffDepthSave", [1110, 390], [330, 82], filename_prefix="FiffDepth/video/depth",
                       format="png16")
    make = g.add("CreateVideo", [1500, 0], [270, 78])
    save_video = g.add("SaveVideo", [1500, 138], [330, 420], filename_prefix="FiffDepth/video/controlnet_video")
    g.link(est, "controlnet", save_cn, "images")
    g.link(est, "depth", save_depth, "depth")
    g.link(est, "controlnet", make, "images")
    g.link(frames, "fps", make, "fps")
    g.link(frames, "audio", make, "audio")
    g.link(make, "VIDEO", save_video, "video")
    g.group("Load", [loader, video, frames], GROUP_COLORS["load"])
    g.group("Depth, steady over time", [est], GROUP_COLORS["depth"])
    g.group("Save frames + depth video", [save_cn, save_depth, make, save_video], GROUP_COLORS["out"])
    return g.to_json()


def core_loaders(info: dict) -> dict:
    g = Graph(info)
    unet_name, vae_name = CORE_UNET.name, CORE_VAE.name
    g.note("## FiffDepth through ComfyUI's core loaders\n\nThe same depth as with **FiffDepth Loader**, but the "
           "UNet and VAE come from ComfyUI's own loaders and folders.\n\n"
           f"**Models: the ones ComfyUI's own Lotus template loads** ({CORE_MODEL.title}, run as Lotus-D). Missing "
           "files are offered for download by ComfyUI's missing-models dialog:\n"
           f"- **UNet** → `models/diffusion_models/{unet_name}`\n- **VAE** → `models/vae/{vae_name}`\n\n"
           + tree("    ├── diffusion_models/", f"    │   └── {unet_name}", "    └── vae/", f"        └── {vae_name}")
           + "\n\n**Your own FiffDepth checkpoint** instead (no official FiffDepth weights exist; train one with "
           "this pack's `train/finetune.py`): copy `RUN/export/unet/diffusion_pytorch_model.safetensors` to "
           f"`models/diffusion_models/` and `RUN/export/vae/diffusion_pytorch_model.safetensors` to `models/vae/`, "
           f"each renamed (e.g. `{FIFFDEPTH_UNET}`, `{FIFFDEPTH_VAE}`), and pick them in the two loaders.\n\n"
           "**Empty prompt**: **LotusConditioning** (core) gives the unpadded SD 2 empty-prompt embedding "
           "these models need, with nothing to download. Alternative: a **Load CLIP** node (type "
           "`stable_diffusion`, an SD 2 OpenCLIP-H text encoder in `models/text_encoders/`) into the Estimate's "
           "`clip` input instead. Never a `CLIPTextEncode` of \"\": its 77-token padding changes the model's "
           "input.\n\nThe core loaders only recognise full-size SD 2 UNets; small experimental checkpoints need "
           "**FiffDepth Loader**.", [-480, -30], [440, 560])
    unet = g.add("UNETLoader", [0, 0], [330, 82], models=models(unet_name), unet_name=unet_name, weight_dtype="default")
    vae = g.add("VAELoader", [0, 142], [330, 58], models=models(vae_name), vae_name=vae_name)
    cond = g.add("LotusConditioning", [0, 260], [330, 26], title="Empty prompt (LotusConditioning)")
    image = g.add("LoadImage", [0, 346], [330, 420], image="example.png")
    est = g.add("FiffDepthEstimate", [400, 0], [330, 258])
    g.link(unet, "MODEL", est, "model")
    g.link(vae, "VAE", est, "vae")
    g.link(cond, "conditioning", est, "conditioning")
    g.link(image, "IMAGE", est, "image")
    colorize = g.add("FiffDepthColorize", [790, 0], [270, 26])
    save = g.add("FiffDepthSave", [790, 86], [270, 82], filename_prefix="FiffDepth/depth", format="png16")
    cn_preview = g.add("PreviewImage", [1110, 0], [300, 330], title="ControlNet map (near = white)")
    color_preview = g.add("PreviewImage", [1440, 0], [300, 330], title="Depth, coloured (red = near)")
    g.link(est, "controlnet", cn_preview, "images")
    g.link(est, "depth", colorize, "depth")
    g.link(est, "depth", save, "depth")
    g.link(colorize, "image", color_preview, "images")
    g.group("Core loaders", [unet, vae, cond, image], GROUP_COLORS["load"])
    g.group("Depth", [est, colorize, save, cn_preview, color_preview], GROUP_COLORS["depth"])
    return g.to_json()


BUILDERS = {
    "FiffDepth 1 - Image to depth": image_to_depth,
    "FiffDepth 2 - SD1.5 ControlNet": lambda info: controlnet_workflow(info, sdxl=False),
    "FiffDepth 3 - SDXL ControlNet": lambda info: controlnet_workflow(info, sdxl=True),
    "FiffDepth 4 - Video to depth": video_depth,
    "FiffDepth 5 - Core loaders": core_loaders,
    "FiffDepth 6 - Wan VACE video": lambda info: wan_workflow.video_controlnet_wan(info, sys.modules[__name__]),
}


def live_object_info() -> dict:
    from comfy_server import comfy_server, object_info

    with tempfile.TemporaryDirectory() as base, comfy_server(Path(base)) as url:
        return object_info(url)


def fit_sizes(workflows: dict[str, dict], info: dict) -> None:
    """Grow node sizes to the frontend's own minimum (needs Chromium and COMFYUI_PATH)."""
    import frontend
    from comfy_server import comfy_server

    async def measure():
        sizes = {}
        async with frontend.browser_page() as page:
            await frontend.open_app(page, url)
            for name, workflow in workflows.items():
                sizes[name] = (await frontend.load_workflow(page, workflow))["sizes"]
        return sizes

    with tempfile.TemporaryDirectory() as base:
        frontend.write_quiet_settings(Path(base))
        with comfy_server(Path(base)) as url:
            measured = frontend.run(measure())
    for name, workflow in workflows.items():
        for node in workflow["nodes"]:
            got = measured[name][str(node["id"])]["min"]
            if got[0] > node["size"][0] + 0.5 or got[1] > node["size"][1] + 0.5:
                print(f"{name}: node {node['id']} {node['type']} {node['size']} < frontend minimum {got}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--object-info", help="a saved /object_info JSON instead of starting ComfyUI")
    parser.add_argument("--fit", action="store_true", help="report nodes smaller than the frontend's minimum")
    args = parser.parse_args()
    info = json.loads(Path(args.object_info).read_text()) if args.object_info else live_object_info()
    workflows = {name: build(info) for name, build in BUILDERS.items()}
    for name, workflow in workflows.items():
        (WORKFLOWS / f"{name}.json").write_text(json.dumps(workflow, indent=2, ensure_ascii=False) + "\n")
        print("wrote", WORKFLOWS / f"{name}.json")
    if args.fit:
        fit_sizes(workflows, info)


if __name__ == "__main__":
    main()
