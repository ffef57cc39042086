"""Writing FiffDepth checkpoints in the layouts :mod:`fiffdepth_core.weights.checkpoint` loads.

Every export describes itself: configs travel with the weights and the empty-prompt embedding is included, so
``FiffDepthLoader`` and the CLI need nothing else. Existing outputs are never replaced unless asked.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..fileio.writers import write_atomic
from ..method.backbone import unwrap_module
from .text_embed import EMBED_FILE, EMBED_KEY, write_embedding
from .text_encoder import write_text_encoder


def pipeline_index(with_text_encoder: bool) -> dict:
    """The ``model_index.json`` of a FiffDepth diffusers folder."""
    index = {"_class_name": "FiffDepthPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"]}
    if with_text_encoder:
        index.update(text_encoder=["transformers", "CLIPTextModel"], tokenizer=["transformers", "CLIPTokenizer"])
    return index


def model_config(model: torch.nn.Module) -> dict:
    """A diffusers model's config as a plain JSON-ready dict (private ``_`` keys dropped)."""
    config = dict(unwrap_module(model).config)
    return json.loads(json.dumps({k: v for k, v in config.items() if not k.startswith("_")}))


def _state_dict(model: torch.nn.Module, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    tensors = unwrap_module(model).state_dict()
    return {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
            for k, v in tensors.items()}


def _claim_folder(folder: Path, overwrite: bool) -> None:
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise FileExistsError(f"{folder} exists and is not empty; pass overwrite=True to write into it")
    folder.mkdir(parents=True, exist_ok=True)


def export_diffusers(folder: str | Path, unet, vae, embed: torch.Tensor, text_encoder_dir: str | Path | None = None,
                     tokenizer_dir: str | Path | None = None, dtype: torch.dtype | None = None,
                     overwrite: bool = False) -> Path:
    """The official pipeline layout: ``model_index.json``, ``unet/``, ``vae/``, the cached embedding, and (when
    given) ``text_encoder/`` (weights rewritten with the ``text_model.`` prefix that transformers 4 and 5 both
    read) and a copy of ``tokenizer/``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    _claim_folder(folder, overwrite)
    for part, model in (("unet", unet), ("vae", vae)):
        (folder / part).mkdir(exist_ok=True)
        (folder / part / "config.json").write_text(json.dumps(
            {"_class_name": type(unwrap_module(model)).__name__, **model_config(model)}, indent=2))
        weights = _state_dict(model, dtype)
        write_atomic(folder / part / "diffusion_pytorch_model.safetensors",
                      lambda tmp, w=weights: save_file(w, str(tmp)), overwrite)
    if text_encoder_dir is not None:  # rewritten in the layout every supported transformers version reads
        write_text_encoder(text_encoder_dir, folder / "text_encoder", overwrite)
    if tokenizer_dir is not None:
        shutil.copytree(tokenizer_dir, folder / "tokenizer", dirs_exist_ok=overwrite)
    with_text = text_encoder_dir is not None and tokenizer_dir is not None
    (folder / "model_index.json").write_text(json.dumps(pipeline_index(with_text), indent=2))
    write_embedding(folder / EMBED_FILE, embed, overwrite=overwrite)
    return folder


def export_bundle(path: str | Path, unet, vae, embed: torch.Tensor, dtype: torch.dtype | None = None,
                  overwrite: bool = False) -> Path:
    """One ``.safetensors`` file with ``unet.*``, ``vae.*``, ``empty_text_embed`` and both configs as metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"`path` must end in .safetensors, got {path.name!r}")
    tensors = {f"unet.{k}": v for k, v in _state_dict(unet, dtype).items()}
    tensors.update({f"vae.{k}": v for k, v in _state_dict(vae, dtype).items()})
    tensors[EMBED_KEY] = embed.detach().float().cpu().contiguous()
    metadata = {"format": "fiffdepth-bundle", "unet_config": json.dumps(model_config(unet)),
                "vae_config": json.dumps(model_config(vae))}
    return write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata), overwrite)


def export_single_files(folder: str | Path, unet, vae, embed: torch.Tensor, dtype: torch.dtype | None = None,
                        overwrite: bool = False) -> Path:
    """A folder with ``unet.safetensors``, ``vae.safetensors`` (configs in their metadata) and the embedding."""
    from safetensors.torch import save_file

    folder = Path(folder)
    _claim_folder(folder, overwrite)
    for part, model in (("unet", unet), ("vae", vae)):
        weights, meta = _state_dict(model, dtype), {"format": "fiffdepth-single-file",
                                                    "config": json.dumps(model_config(model))}
        write_atomic(folder / f"{part}.safetensors", lambda tmp, w=weights, m=meta: save_file(w, str(tmp), metadata=m),
                      overwrite)
    write_embedding(folder / EMBED_FILE, embed, overwrite=overwrite)
    return folder
