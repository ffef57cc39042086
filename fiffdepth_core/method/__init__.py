"""The method: the three-verb backbone, model families, the one-pass predictor and its image/tiling/memory
planning, output conventions, temporal alignment, training losses and evaluation metrics. Imports torch and numpy
only (and the I/O layer); never a checkpoint format, a host or a command line.
"""

from .backbone import Backbone, StandaloneBackbone, timestep_batch, unwrap_module
from .depth_norm import disparity_to_depth_target, normalize_depth
from .devices import DTYPES, PRECISIONS, free_memory, resolve_device, resolve_dtypes
from .families import FAMILIES, FAMILY_CHOICES, FIFFDEPTH, Family, LOTUS_D, detect_family, get_family, training_family
from .image import resize, to_rgb
from .losses import (LossWeights, depth_loss, latent_valid_mask, masked_mse, sd2_alphas_cumprod, total_loss,
                     trajectory_targets)
from .metrics import ALIGNMENTS, DEPTH_METRICS, MIN_EVAL_DEPTH, align, boundary_f1, evaluate_depth, mean_metrics
from .planning import InsufficientMemoryError, MEMORY_HEADROOM, check_decode, check_memory, plan_config, vae_bytes
from .denoise import steady_clip, steady_frames
from .exposure import level_exposure
from .postprocess import NORMALIZATIONS, colorize, controlnet_depth
from .predictor import (DEFAULT_PROCESSING_RESOLUTION, MAX_PROCESSING_RESOLUTION, NonFiniteOutputError, PASSES,
                        PredictConfig, predict_depth, predict_depth_latent)
from .temporal import TEMPORAL_MODES, align_sequence, predict_aligned
from .tiling import DEFAULT_TILE_SIZE, TileConfig
from .video_metrics import clip_scores, temporal_change

__all__ = [
    "ALIGNMENTS", "Backbone", "DEFAULT_PROCESSING_RESOLUTION", "DEFAULT_TILE_SIZE", "DEPTH_METRICS", "DTYPES",
    "FAMILIES", "FAMILY_CHOICES", "FIFFDEPTH", "Family", "InsufficientMemoryError", "LOTUS_D", "LossWeights",
    "MAX_PROCESSING_RESOLUTION", "MEMORY_HEADROOM", "MIN_EVAL_DEPTH", "NORMALIZATIONS", "NonFiniteOutputError",
    "PASSES", "PRECISIONS", "PredictConfig", "StandaloneBackbone", "TEMPORAL_MODES", "TileConfig", "align",
    "align_sequence", "boundary_f1", "check_decode", "check_memory", "clip_scores", "colorize", "controlnet_depth",
    "depth_loss", "detect_family", "disparity_to_depth_target", "evaluate_depth", "free_memory", "get_family",
    "latent_valid_mask", "level_exposure", "masked_mse", "mean_metrics", "normalize_depth", "plan_config",
    "predict_aligned", "predict_depth", "predict_depth_latent", "resize", "resolve_device", "resolve_dtypes",
    "sd2_alphas_cumprod", "steady_clip", "steady_frames", "temporal_change", "timestep_batch", "to_rgb", "total_loss",
    "training_family", "trajectory_targets", "unwrap_module", "vae_bytes",
]
