"""The weights: checkpoint layouts and the one loader, the empty-prompt embedding, the text encoder across
transformers versions, exports, and model configs. Builds the method's backbone from files; diffusers and
transformers are imported lazily, where needed.
"""

from .checkpoint import (CheckpointInfo, empty_embedding, find_checkpoints, fingerprint, inspect_checkpoint,
                         instantiate, load_standalone, load_state_dict)
from .export import (ModelWeights, export_bundle, export_diffusers, export_single_files, model_weights, pipeline_index,
                     stored_weights)
from .layout import CheckpointError
from .ldm_config import ldm_unet_config
from .sd2_configs import SD2_TEXT_CONFIG, SD2_UNET_CONFIG, SD2_VAE_CONFIG

__all__ = [
    "CheckpointError", "CheckpointInfo", "ModelWeights", "SD2_TEXT_CONFIG", "SD2_UNET_CONFIG", "SD2_VAE_CONFIG",
    "empty_embedding", "export_bundle", "export_diffusers", "export_single_files", "find_checkpoints", "fingerprint",
    "inspect_checkpoint", "instantiate", "ldm_unet_config", "load_standalone", "load_state_dict", "model_weights",
    "pipeline_index", "stored_weights",
]
