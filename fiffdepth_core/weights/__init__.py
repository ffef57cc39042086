"""The weights: checkpoint layouts and the one loader, the empty-prompt embedding (and SD2's, shipped), the text
encoder across transformers versions, exports, model configs, and the catalogue of public models with their verified
downloads. Builds the method's backbone from files; diffusers, transformers and huggingface_hub are imported lazily,
where needed.
"""

from .catalogue import CATALOGUE, COMFY_CORE_FILES, DEFAULT_ID, CatalogueModel, find_model, get_model, human_size
from .checkpoint import (CheckpointInfo, empty_embedding, find_checkpoints, fingerprint, inspect_checkpoint,
                         instantiate, load_standalone, load_state_dict)
from .download import default_models_dir, ensure_model, installed_path, model_state
from .export import (ModelWeights, export_bundle, export_diffusers, export_single_files, model_weights, pipeline_index,
                     stored_weights)
from .hub_client import DownloadError
from .layout import CheckpointError
from .ldm_config import ldm_unet_config
from .sd2_configs import SD2_TEXT_CONFIG, SD2_UNET_CONFIG, SD2_VAE_CONFIG
from .text_embed import sd2_constant

__all__ = [
    "CATALOGUE", "COMFY_CORE_FILES", "DEFAULT_ID", "CatalogueModel", "DownloadError", "default_models_dir",
    "ensure_model", "find_model", "get_model", "human_size", "installed_path", "model_state", "sd2_constant",
    "CheckpointError", "CheckpointInfo", "ModelWeights", "SD2_TEXT_CONFIG", "SD2_UNET_CONFIG", "SD2_VAE_CONFIG",
    "empty_embedding", "export_bundle", "export_diffusers", "export_single_files", "find_checkpoints", "fingerprint",
    "inspect_checkpoint", "instantiate", "ldm_unet_config", "load_standalone", "load_state_dict", "model_weights",
    "pipeline_index", "stored_weights",
]
