"""Model folders: ``models/fiffdepth`` (this pack's) and ``models/geometry_estimation`` (core's depth folder)."""

from __future__ import annotations

import os

import folder_paths

from ..fiffdepth_core.weights import find_checkpoints

FOLDERS = ("fiffdepth", "geometry_estimation")


def register_folders() -> None:
    """Add the default folders, merging with entries ``extra_model_paths.yaml`` may already have made."""
    for name in FOLDERS:
        folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name))
        paths, extensions = folder_paths.folder_names_and_paths[name]
        if isinstance(extensions, set) and extensions:
            extensions.add(".safetensors")


def checkpoint_names() -> list[str]:
    """Diffusers folders, single-file folders and .safetensors bundles in every registered folder."""
    names: list[str] = []
    for name in FOLDERS:
        for root in folder_paths.get_folder_paths(name):
            names += [n for n in find_checkpoints(root) if n not in names]
    return names


def checkpoint_path(name: str) -> str:
    """The full path of a listed checkpoint name; FileNotFoundError listing the folders searched."""
    roots = [root for folder in FOLDERS for root in folder_paths.get_folder_paths(folder)]
    for root in roots:
        candidate = os.path.join(root, name)
        if os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(f"FiffDepth checkpoint {name!r} not found in: {', '.join(roots)}")
