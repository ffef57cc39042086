"""What differs between ComfyUI versions, behind feature checks: 0.3.48 up to the 0.38 line.

Newer ComfyUI turns on dynamic VRAM on NVIDIA: ``comfy.model_patcher.CoreModelPatcher`` (rebound at startup to
``ModelPatcherDynamic`` when it works) wraps models, weights load with ``assign=patcher.is_dynamic()``, VAE calls
run inside ``comfy.model_management.cuda_device_context(device)`` and free memory comes from
``patcher.get_free_memory(device)``. Its V3 schema also takes ``search_aliases``. Every helper here uses the new
path where the running ComfyUI has it and the old one otherwise. Modules are looked up at call time (never
``from ... import``): ComfyUI rebinds ``CoreModelPatcher`` after custom nodes may have been imported.
"""

from __future__ import annotations

import contextlib
import inspect

SEARCH_ALIASES = ["fiffdepth", "depth"]  # every node; each adds its own
CATEGORY = "image/geometry estimation/FiffDepth"  # beside core's DA3, MoGe and Marigold nodes


def patcher_class():
    """``CoreModelPatcher`` where it exists (dynamic VRAM on newer ComfyUI), else ``ModelPatcher``."""
    import comfy.model_patcher

    return getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)


def is_dynamic(patcher) -> bool:
    check = getattr(patcher, "is_dynamic", None)
    return bool(check()) if callable(check) else False


def load_model_weights(model, state_dict: dict, patcher) -> None:
    """``BaseModel.load_model_weights`` the way core calls it for ``patcher``: ``assign=`` when supported."""
    if "assign" in inspect.signature(model.load_model_weights).parameters:
        model.load_model_weights(state_dict, "", assign=is_dynamic(patcher))
    else:
        model.load_model_weights(state_dict, "")


def device_context(device):
    """``comfy.model_management.cuda_device_context(device)`` where it exists, else nothing."""
    import comfy.model_management as mm

    context = getattr(mm, "cuda_device_context", None)
    return context(device) if context is not None else contextlib.nullcontext()


def free_memory(patcher, device) -> int:
    """Free memory for work on ``device`` as ``patcher`` sees it (newer ComfyUI counts what dynamic VRAM can give
    back), else ``comfy.model_management.get_free_memory``."""
    ask = getattr(patcher, "get_free_memory", None)
    if callable(ask):
        return int(ask(device))
    import comfy.model_management as mm

    return int(mm.get_free_memory(device))


def load_vae(vae, memory_required: int) -> None:
    """Load ``vae.patcher`` for a call, as core's ``VAE.encode``/``decode`` do (full load where it says so)."""
    import comfy.model_management as mm

    extra = {"force_full_load": True} if getattr(vae, "disable_offload", False) else {}
    mm.load_models_gpu([vae.patcher], memory_required=memory_required, **extra)


def schema_extras(schema_class, aliases: list[str]) -> dict:
    """Keyword arguments for ``io.Schema`` that only newer ComfyUI knows: ``search_aliases`` (the node library
    search also matches these words)."""
    try:
        parameters = inspect.signature(schema_class).parameters
    except (TypeError, ValueError):
        return {}
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    return {"search_aliases": list(aliases)} if "search_aliases" in parameters or accepts_any else {}
