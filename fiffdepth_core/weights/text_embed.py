"""The empty-prompt embedding: the SD2 text encoder's output for "" without padding, ``[1, 2, D]``.

FiffDepth conditions every UNet call on this constant. It is computed once from the checkpoint's own text
encoder and tokenizer and cached beside the weights as ``empty_text_embed.safetensors``, so later loads
need neither the text encoder nor transformers.

Every family the pack runs conditions on the same embedding of SD2's OpenCLIP-H text encoder, ``[1, 2, 1024]``, so
the package ships it (:func:`sd2_constant`): a checkpoint with neither a cached embedding nor a text encoder (every
download from the catalogue) uses it. The values are that encoder's output rounded to fp16 (ComfyUI core inlines the
same numbers in its ``LotusConditioning`` node); what the rounding does to depth is measured in ``docs/models.md``.
A checkpoint's own embedding, cached or computed, always wins.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

EMBED_FILE = "empty_text_embed.safetensors"
EMBED_KEY = "empty_text_embed"
CONSTANT_FILE = "sd2_empty_prompt.safetensors"  # package data, beside this module in data/
CONSTANT_WIDTH = 1024  # SD2's cross-attention width: the constant fits UNets with this cross_attention_dim
_constant_logged = False


def compute_empty_embedding(text_encoder_dir: str | Path, tokenizer_dir: str | Path) -> torch.Tensor:
    """Run the text encoder on the unpadded empty prompt (BOS, EOS) in fp32 on the CPU -> ``[1, 2, D]``.

    The encoder's weights are checked key by key (:func:`~fiffdepth_core.weights.text_encoder.load_text_encoder`), so a
    file written by another transformers version is remapped, never silently left random.
    """
    from transformers import CLIPTokenizer

    from .layout import CheckpointError
    from .text_encoder import load_text_encoder

    try:
        tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir))
        ids = tokenizer("", padding="do_not_pad", truncation=True, return_tensors="pt").input_ids  # [1,2]
        encoder = load_text_encoder(text_encoder_dir, torch.float32)
        with torch.inference_mode():
            embed = encoder(ids).last_hidden_state  # [1,2,D]
    except CheckpointError:
        raise
    except Exception as err:  # transformers/torch raise many types for damaged folders
        raise ValueError(f"cannot compute the empty-prompt embedding from {text_encoder_dir} and {tokenizer_dir}: "
                         f"{' '.join(str(err).split())[:400]}") from None
    return embed.float().contiguous()


def read_embedding(path: str | Path) -> torch.Tensor:
    """Load a cached embedding file -> float32 ``[1, T, D]``."""
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise ValueError(f"{path} (the cached empty-prompt embedding) is damaged: {err}") from None
    if EMBED_KEY not in tensors:
        raise ValueError(f"{path} holds no `{EMBED_KEY}` tensor (found keys {sorted(tensors)[:5]})")
    return checked_embedding(tensors[EMBED_KEY], path)


def sd2_constant() -> torch.Tensor:
    """The shipped SD2 empty-prompt embedding, float32 ``[1, 2, 1024]`` (logged once per process)."""
    global _constant_logged
    from importlib import resources

    from safetensors.torch import load

    data = resources.files(__package__).joinpath("data", CONSTANT_FILE).read_bytes()
    embed = checked_embedding(load(data)[EMBED_KEY], CONSTANT_FILE)
    if not _constant_logged:
        _constant_logged = True
        log.info("the checkpoint has no empty-prompt embedding and no text encoder: using the SD2 embedding shipped "
                 "with FiffDepth (fp16-rounded, docs/models.md)")
    return embed


def checked_embedding(embed: torch.Tensor, where) -> torch.Tensor:
    """A stored embedding as float32 ``[1, T, D]`` (``[T, D]`` is accepted); ValueError for any other shape."""
    embed = embed.float()
    if embed.ndim == 2:
        embed = embed[None]  # [1,T,D]
    if embed.ndim != 3 or embed.shape[0] != 1:
        raise ValueError(f"`{EMBED_KEY}` in {where} must have shape [1, T, D], got {tuple(embed.shape)}")
    return embed


def write_embedding(path: str | Path, embed: torch.Tensor, overwrite: bool = False) -> Path:
    """Save ``embed`` ``[1, T, D]`` as a safetensors file (never replacing an existing file by default)."""
    from safetensors.torch import save_file

    from ..fileio.writers import write_atomic

    tensor = embed.detach().float().cpu().contiguous()
    metadata = {"prompt": "", "padding": "none", "shape": "x".join(map(str, tensor.shape))}
    return write_atomic(Path(path), lambda tmp: save_file({EMBED_KEY: tensor}, str(tmp), metadata=metadata),
                         overwrite)


def cache_embedding(path: Path, embed: torch.Tensor) -> None:
    """Best-effort cache write: a read-only checkpoint folder only costs a recomputation next time."""
    try:
        write_embedding(path, embed)
        log.info("cached the empty-prompt embedding in %s", path)
    except FileExistsError:
        pass
    except OSError as err:
        log.warning("could not cache the empty-prompt embedding in %s (%s); it will be recomputed", path, err)
