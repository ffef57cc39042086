"""Helpers for tests against a real ComfyUI (COMFYUI_PATH): in-process loading, and the headless server of
``tools/comfy_server.py`` (re-exported here).

ComfyUI's code is never part of this repository; these helpers only drive a checkout the developer points at.
ComfyUI's root goes first on sys.path so its top-level ``nodes`` module is never shadowed by this pack's folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from comfy_server import PACK_ROOT, comfy_server, object_info, post_prompt, wait_for  # noqa: F401 (re-exported)

from fiffdepth_testkit.comfyui import load_pack_into_comfyui

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
SKIP_REASON = ("set COMFYUI_PATH to a ComfyUI checkout (>= 0.3.48, with its requirements installed in this "
               "Python) to run the real-host tests")
requires_comfyui = pytest.mark.skipif(not COMFYUI_PATH, reason=SKIP_REASON)


def import_comfy(models_dir: Path, output_dir: Path):
    """Import ComfyUI in this process (CPU), point its fiffdepth/output folders at temp dirs, load the pack.

    Returns ComfyUI's ``nodes`` module, with this pack loaded by ``nodes.load_custom_node`` as ComfyUI does.
    """
    def configure():
        import folder_paths

        folder_paths.add_model_folder_path("fiffdepth", str(models_dir), is_default=True)
        folder_paths.set_output_directory(str(output_dir))

    return load_pack_into_comfyui(COMFYUI_PATH, cpu=True, configure=configure)
