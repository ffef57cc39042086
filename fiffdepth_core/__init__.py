"""FiffDepth: one-pass monocular depth from a fine-tuned Stable Diffusion 2 UNet (Bai & Huang, ICCV 2025).

Host-independent core of the ComfyUI pack: the t = 0 forward and its pre/post-processing, checkpoints, output
files, training losses and evaluation metrics. It never imports ComfyUI, accelerate or the training scripts.

Quick use::

    from fiffdepth_core import load_standalone, predict_depth, PredictConfig
    backbone = load_standalone("path/to/checkpoint", device="cuda", dtype=torch.bfloat16)
    depth = predict_depth(backbone, images)          # [B,H,W] in [0,1], 0 = near

The same loader runs Lotus-D, GenPercept and Marigold-E2E-FT checkpoints (``family="auto"`` detects them; see
:mod:`fiffdepth_core.families`).
"""

from .backbone import Backbone, StandaloneBackbone
from .families import FAMILIES, Family, detect_family, get_family
from .checkpoint import CheckpointError, CheckpointInfo, inspect_checkpoint, load_standalone
from .postprocess import colorize, controlnet_depth
from .predictor import NonFiniteOutputError, PredictConfig, predict_depth
from .tiling import TileConfig

__version__ = "0.1.0"

__all__ = [
    "Backbone", "StandaloneBackbone", "FAMILIES", "Family", "detect_family", "get_family", "CheckpointError",
    "CheckpointInfo", "inspect_checkpoint", "load_standalone", "colorize", "controlnet_depth", "NonFiniteOutputError", "PredictConfig",
    "predict_depth", "TileConfig", "__version__",
]
