"""FiffDepth: one-pass monocular depth from a fine-tuned Stable Diffusion 2 UNet (Bai & Huang, ICCV 2025).

Host-independent core of the pack, in three wings over a small I/O layer, each importing only those below it:

* :mod:`fiffdepth_core.app`: the standalone application (command line, videos, sequences, multi-process runs);
* :mod:`fiffdepth_core.weights`: checkpoints, the empty-prompt embedding, exports;
* :mod:`fiffdepth_core.method`: the t = 0 forward, its pre/post-processing, temporal alignment, losses, metrics;
* :mod:`fiffdepth_core.fileio`: reading images and writing files atomically.

It never imports ComfyUI, the WebUIs, accelerate or the training scripts.

Quick use::

    from fiffdepth_core import load_standalone, predict_depth, PredictConfig
    backbone = load_standalone("path/to/checkpoint", device="cuda", dtype=torch.bfloat16)
    depth = predict_depth(backbone, images)          # [B,H,W] in [0,1], 0 = near

The same loader runs Lotus-D, GenPercept and Marigold-E2E-FT checkpoints (``family="auto"`` detects them; see
:mod:`fiffdepth_core.method.families`).
"""

from .method import (FAMILIES, Backbone, Family, NonFiniteOutputError, PredictConfig, StandaloneBackbone, TileConfig,
                     colorize, controlnet_depth, detect_family, get_family, predict_depth)
from .weights import CheckpointError, CheckpointInfo, inspect_checkpoint, load_standalone

__version__ = "0.1.0"

__all__ = [
    "Backbone", "StandaloneBackbone", "FAMILIES", "Family", "detect_family", "get_family", "CheckpointError",
    "CheckpointInfo", "inspect_checkpoint", "load_standalone", "colorize", "controlnet_depth", "NonFiniteOutputError", "PredictConfig",
    "predict_depth", "TileConfig", "__version__",
]
