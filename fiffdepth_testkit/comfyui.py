"""Load this pack into a real ComfyUI inside the current process, the way ComfyUI itself loads custom nodes.

ComfyUI's root goes first on ``sys.path``: ComfyUI has a top-level module called ``nodes`` that this pack's own
``nodes/`` folder must never shadow.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]


def load_pack_into_comfyui(comfyui_path: str | Path, cpu: bool = True,
                           configure: Callable[[], None] | None = None):
    """Import ComfyUI from ``comfyui_path``, then load this pack with ``nodes.load_custom_node``.

    ``cpu`` sets ComfyUI's ``--cpu`` flag (a CUDA build of torch without a GPU would otherwise fail in model
    management). ``configure`` runs after ComfyUI's settings are importable and before the pack loads (e.g. to
    point ``folder_paths`` at temporary folders). Returns ComfyUI's ``nodes`` module.
    """
    root = str(Path(comfyui_path).resolve())
    if root in sys.path:
        sys.path.remove(root)
    sys.path.insert(0, root)
    import comfy.cli_args

    comfy.cli_args.args.cpu = cpu
    comfy.cli_args.args.disable_api_nodes = True
    comfy.cli_args.args.use_pytorch_cross_attention = True  # SDPA, as diffusers and CUDA builds use
    if configure is not None:
        configure()
    import nodes

    if Path(nodes.__file__).resolve().parent != Path(root):
        raise RuntimeError(f"`nodes` resolved to {nodes.__file__}, not ComfyUI's; put ComfyUI's root first")
    if not asyncio.run(nodes.load_custom_node(str(PACK_ROOT), module_parent="custom_nodes")):
        raise RuntimeError("ComfyUI could not import the pack (see the log above)")
    return nodes


def pack_module(name: str):
    """A module of this pack as ComfyUI registered it, e.g. ``pack_module("nodes.host_backbone")``."""
    prefix = str(PACK_ROOT).replace(".", "_x_")
    return sys.modules[f"{prefix}.{name}"]
