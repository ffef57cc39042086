"""ComfyUI adapters for FiffDepth (V3 API). Reached only by relative import from the pack's __init__.py."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from .depth_latent import FiffDepthDepthLatent
from .estimate import FiffDepthEstimate
from .folders import register_folders
from .loader import FiffDepthLoader
from .save import FiffDepthColorize, FiffDepthSave

register_folders()  # at import: the loader lists these folders when ComfyUI asks for its schema

NODES = [FiffDepthLoader, FiffDepthEstimate, FiffDepthSave, FiffDepthColorize, FiffDepthDepthLatent]


class FiffDepthExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES


async def comfy_entrypoint() -> FiffDepthExtension:
    return FiffDepthExtension()
