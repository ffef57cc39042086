"""FiffDepthSave (raw depth to 16-bit PNG / float32 .npy / float32 EXR) and FiffDepthColorize (preview)."""

from __future__ import annotations

import os

import comfy.model_management as mm
import folder_paths
from comfy_api.latest import io, ui

from ..fiffdepth_core.fileio import WRITERS
from ..fiffdepth_core.method import colorize
from . import compat

EXTENSIONS = {"png16": "png", "npy": "npy", "exr": "exr"}


class FiffDepthSave(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FiffDepthSave",
            display_name="FiffDepth Save Depth",
            category=compat.CATEGORY,
            **compat.schema_extras(io.Schema, compat.SEARCH_ALIASES + ["save depth", "16-bit png", "exr", "npy"]),
            description="Saves raw depth losslessly into ComfyUI's output folder with the usual counter naming: "
                        "16-bit PNG (depth x 65535), float32 .npy, or float32 EXR (channel Z). Never overwrites.",
            inputs=[
                io.Mask.Input("depth", tooltip="Raw depth from FiffDepthEstimate ([B,H,W] in [0,1], 0 = near)"),
                io.String.Input("filename_prefix", default="FiffDepth/depth",
                                tooltip="Prefix inside the output folder; a/b makes subfolder a; %year%, %month%, %day% "
                                        "and %width%/%height% are replaced"),
                io.Combo.Input("format", options=list(EXTENSIONS), default="png16",
                               tooltip="png16: 16-bit greyscale PNG; npy / exr: exact float32"),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, depth, filename_prefix="FiffDepth/depth", format="png16") -> io.NodeOutput:
        if depth.ndim == 2:
            depth = depth[None]  # [1,H,W]
        out_dir = folder_paths.get_output_directory()
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, out_dir, depth.shape[-1], depth.shape[-2])
        results = []
        for item in depth:
            file = f"{name}_{counter:05}_.{EXTENSIONS[format]}"
            WRITERS[format](os.path.join(folder, file), item)
            results.append(ui.SavedResult(file, subfolder, io.FolderType.output))
            counter += 1
        return io.NodeOutput(ui=ui.SavedImages(results) if format == "png16" else None)


class FiffDepthColorize(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FiffDepthColorize",
            display_name="FiffDepth Colorize",
            category=compat.CATEGORY,
            **compat.schema_extras(io.Schema, compat.SEARCH_ALIASES + ["depth preview", "colormap", "colorize depth"]),
            description="Colour preview of raw depth with the Spectral map the reference pipeline uses "
                        "(red = near, violet = far).",
            inputs=[io.Mask.Input("depth", tooltip="Raw depth from FiffDepthEstimate")],
            outputs=[io.Image.Output(display_name="image")],
        )

    @classmethod
    def execute(cls, depth) -> io.NodeOutput:
        if depth.ndim == 2:
            depth = depth[None]
        rgb = colorize(depth).movedim(1, -1)  # [B,3,H,W] -> [B,H,W,3]
        return io.NodeOutput(rgb.to(mm.intermediate_device()))
