"""FiffDepth for ComfyUI: one-pass diffusion depth (ICCV 2025) on the host's own SD2 UNet and VAE.

ComfyUI imports this file by path. Only inside ComfyUI (when `comfy` imports) does it expose the V3 entry point,
so the core library, training scripts and tests can live in the same folder without loading the nodes.
"""

try:
    import comfy  # noqa: F401  (present only inside ComfyUI)
except ImportError:  # not running inside ComfyUI: nothing to register
    pass
else:
    from .nodes import comfy_entrypoint  # noqa: F401

