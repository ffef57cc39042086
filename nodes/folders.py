"""Model folders: ``models/fiffdepth`` (this pack's) and ``models/geometry_estimation`` (core's depth folder), and
the catalogue models offered for download into ``models/fiffdepth/<id>/``."""

from __future__ import annotations

import math
import os

import folder_paths

from ..fiffdepth_core.weights import CATALOGUE, ensure_model, find_checkpoints, find_model, installed_path

FOLDERS = ("fiffdepth", "geometry_estimation")


def register_folders() -> None:
    """Add the default folders, merging with entries ``extra_model_paths.yaml`` may already have made."""
    for name in FOLDERS:
        folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name))
        paths, extensions = folder_paths.folder_names_and_paths[name]
        if isinstance(extensions, set) and extensions:
            extensions.add(".safetensors")


def roots() -> list[str]:
    return [root for folder in FOLDERS for root in folder_paths.get_folder_paths(folder)]


def download_root() -> str:
    """Where catalogue models are installed: the first ``fiffdepth`` folder (``models/fiffdepth`` unless
    ``extra_model_paths.yaml`` names another as the default)."""
    return folder_paths.get_folder_paths("fiffdepth")[0]


def installed_catalogue(model) -> str | None:
    for root in roots():
        if installed_path(model, root) is not None:
            return os.path.join(root, model.id)
    return None


def checkpoint_names() -> list[str]:
    """Installed checkpoints first (diffusers folders, single-file folders and .safetensors bundles in every
    registered folder), then the catalogue models not installed yet, with their download size. Disk only."""
    names: list[str] = []
    for root in roots():
        names += [n for n in find_checkpoints(root) if n not in names]
    return names + [m.label for m in CATALOGUE if m.id not in names and installed_catalogue(m) is None]


def checkpoint_path(name: str) -> str:
    """The full path of a listed checkpoint name; FileNotFoundError listing the folders searched."""
    for root in roots():
        candidate = os.path.join(root, name)
        if os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(f"FiffDepth checkpoint {name!r} not found in: {', '.join(roots())}")


def known_name(name: str) -> bool:
    """A name the loader can run: an installed checkpoint, or a catalogue model (id, menu label or repository)."""
    return find_model(name) is not None or any(os.path.exists(os.path.join(r, name)) for r in roots())


def locate(name: str, family: str = "auto") -> tuple[str, str]:
    """(path, family) of the loader's choice. A catalogue model not installed yet is downloaded into
    ``models/fiffdepth/<id>/`` first, with ComfyUI's progress bar on the node (cancel stops it; the next run
    resumes). A catalogue model runs as its catalogue family unless one is picked."""
    model = find_model(name)
    if model is None:
        return checkpoint_path(name), family
    family = model.family if family == "auto" else family
    found = installed_catalogue(model)
    if found is not None:
        return found, family
    import comfy.model_management as mm
    import comfy.utils

    bar = {}

    def progress(done: int, total: int) -> None:  # in MB: the node shows a fraction
        megabytes = max(1, math.ceil(total / 1e6))
        if "bar" not in bar:
            bar["bar"] = comfy.utils.ProgressBar(megabytes)
        bar["bar"].update_absolute(megabytes if done >= total else min(megabytes - 1, int(done / 1e6)), megabytes)

    folder = ensure_model(model, download_root(), progress=progress,
                          interrupt=mm.throw_exception_if_processing_interrupted)
    return str(folder), family
