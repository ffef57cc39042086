"""Writing FiffDepth checkpoints in the layouts :mod:`fiffdepth_core.weights.checkpoint` loads.

Every export describes itself: configs travel with the weights and the empty-prompt embedding is included, so
``FiffDepthLoader`` and the CLI need nothing else. Existing outputs are never replaced unless asked.

Weights are streamed: each tensor is written from the live model (or produced by a :class:`ModelWeights` source:
read from a file, merged with an adapter) one at a time, so an export adds one tensor's memory, not a model's.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..fileio.tensor_files import TensorEntry, tensor_entry, write_tensors
from ..method.backbone import unwrap_module
from .text_embed import EMBED_FILE, EMBED_KEY, write_embedding
from .text_encoder import write_text_encoder


@dataclass(frozen=True)
class ModelWeights:
    """A model to export without the model object: its diffusers class name, its config and its tensors
    (``TensorEntry``: name, shape, dtype, and a function that produces the values when they are written)."""

    class_name: str
    config: dict
    entries: tuple[TensorEntry, ...]


def model_weights(model) -> ModelWeights:
    """``model`` (a diffusers model, possibly wrapped) as a :class:`ModelWeights` over its live tensors (no copy);
    a :class:`ModelWeights` is returned as it is."""
    if isinstance(model, ModelWeights):
        return model
    core = unwrap_module(model)
    entries = tuple(tensor_entry(k, v) for k, v in core.state_dict().items())
    return ModelWeights(type(core).__name__, model_config(core), entries)


def _entries(weights: ModelWeights, prefix: str, dtype: torch.dtype | None) -> list[TensorEntry]:
    """The entries renamed with ``prefix`` and cast to ``dtype`` (floating tensors only) as they are written."""
    out = []
    for e in weights.entries:
        target = dtype if dtype is not None and e.dtype.is_floating_point else e.dtype
        produce = e.produce if target == e.dtype else (lambda e=e, t=target: e.produce().to(t))
        out.append(TensorEntry(prefix + e.name, e.shape, target, produce))
    return out


def pipeline_index(with_text_encoder: bool) -> dict:
    """The ``model_index.json`` of a FiffDepth diffusers folder."""
    index = {"_class_name": "FiffDepthPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"]}
    if with_text_encoder:
        index.update(text_encoder=["transformers", "CLIPTextModel"], tokenizer=["transformers", "CLIPTokenizer"])
    return index


def model_config(model) -> dict:
    """A diffusers model's (or a :class:`ModelWeights`') config as a plain JSON-ready dict (private ``_`` keys
    dropped)."""
    config = dict(model.config if isinstance(model, ModelWeights) else unwrap_module(model).config)
    return json.loads(json.dumps({k: v for k, v in config.items() if not k.startswith("_")}))


def _claim_folder(folder: Path, overwrite: bool) -> None:
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise FileExistsError(f"{folder} exists and is not empty; pass overwrite=True to write into it")
    folder.mkdir(parents=True, exist_ok=True)


def export_diffusers(folder: str | Path, unet, vae, embed: torch.Tensor, text_encoder_dir: str | Path | None = None,
                     tokenizer_dir: str | Path | None = None, dtype: torch.dtype | None = None,
                     overwrite: bool = False) -> Path:
    """The official pipeline layout: ``model_index.json``, ``unet/``, ``vae/``, the cached embedding, and (when
    given) ``text_encoder/`` (weights rewritten with the ``text_model.`` prefix that transformers 4 and 5 both
    read) and a copy of ``tokenizer/``. ``unet`` and ``vae`` are diffusers models or :class:`ModelWeights`."""
    folder = Path(folder)
    _claim_folder(folder, overwrite)
    for part, model in (("unet", unet), ("vae", vae)):
        weights = model_weights(model)
        (folder / part).mkdir(exist_ok=True)
        (folder / part / "config.json").write_text(json.dumps(
            {"_class_name": weights.class_name, **model_config(weights)}, indent=2))
        write_tensors(folder / part / "diffusion_pytorch_model.safetensors", _entries(weights, "", dtype),
                      {"format": "pt"}, overwrite)
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
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"`path` must end in .safetensors, got {path.name!r}")
    unet, vae = model_weights(unet), model_weights(vae)
    entries = _entries(unet, "unet.", dtype) + _entries(vae, "vae.", dtype)
    entries.append(tensor_entry(EMBED_KEY, embed.detach().float().cpu().contiguous()))
    metadata = {"format": "fiffdepth-bundle", "unet_config": json.dumps(model_config(unet)),
                "vae_config": json.dumps(model_config(vae))}
    return write_tensors(path, entries, metadata, overwrite)


def export_single_files(folder: str | Path, unet, vae, embed: torch.Tensor, dtype: torch.dtype | None = None,
                        overwrite: bool = False) -> Path:
    """A folder with ``unet.safetensors``, ``vae.safetensors`` (configs in their metadata) and the embedding."""
    folder = Path(folder)
    _claim_folder(folder, overwrite)
    for part, model in (("unet", unet), ("vae", vae)):
        weights = model_weights(model)
        meta = {"format": "fiffdepth-single-file", "config": json.dumps(model_config(weights))}
        write_tensors(folder / f"{part}.safetensors", _entries(weights, "", dtype), meta, overwrite)
    write_embedding(folder / EMBED_FILE, embed, overwrite=overwrite)
    return folder


def stored_weights(info, part: str) -> ModelWeights | None:
    """The ``unet`` or ``vae`` of an inspected checkpoint as stored in its files (original precision), read one
    tensor at a time when written; None where the weights are not in safetensors files (pickle-free ``.bin``)."""
    from ..fileio.tensor_files import TensorFileReader

    source = info.weights.get(part) if info.layout != "bundle" else info.path
    if source is None:
        return None
    source = Path(source)
    prefix = f"{part}." if info.layout == "bundle" else ""
    if source.name.endswith(".index.json"):
        shards = sorted(set(json.loads(source.read_text()).get("weight_map", {}).values()))
        if not shards or any(not isinstance(s, str) or s in ("", ".", "..") or "/" in s or "\\" in s for s in shards):
            return None  # the loader names what is wrong with such an index
        files = [source.parent / shard for shard in shards]
    else:
        files = [source]
    if not all(f.name.endswith(".safetensors") for f in files):
        return None
    entries = []
    for reader in (TensorFileReader(f) for f in files):
        entries += [reader.entry(k, k[len(prefix):]) for k in reader.keys() if k.startswith(prefix)]
    config = info.unet_config if part == "unet" else info.vae_config
    name = "UNet2DConditionModel" if part == "unet" else "AutoencoderKL"
    return ModelWeights(name, {k: v for k, v in config.items() if not k.startswith("_")}, tuple(entries))
