"""Seeded random-weight models of Stable Diffusion 2's shape, built from config, and complete pipelines written
from them: the stand-in base model of ``model.random_geometry`` (no download).

``tiny`` is a miniature with SD2's structure (cross-attention blocks, a 4-level VAE that downsamples by 8, a causal
CLIP text encoder) that trains in milliseconds a step on a CPU; ``sd2`` is the full geometry
(``fiffdepth_core.weights.sd2_configs``) with a tokenizer of SD2's 49408-token size, for real-size runs and honest
timings. The test kit (``fiffdepth_testkit``) reuses this module; nothing here imports the test kit.
"""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

import torch

from fiffdepth_core.weights import SD2_TEXT_CONFIG, SD2_UNET_CONFIG, SD2_VAE_CONFIG, pipeline_index

# Tiny geometry: SD2's configs with two UNet levels (the top one with cross-attention), a 4-level VAE of 32 channels
# (8x downsampling like SD; GroupNorm(32) needs multiples of 32) and a 2-layer causal text encoder.
TINY_UNET_CONFIG = {
    **SD2_UNET_CONFIG,
    "sample_size": 8,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "attention_head_dim": 2,
    "cross_attention_dim": 32,
}

TINY_VAE_CONFIG = {**SD2_VAE_CONFIG, "block_out_channels": [32, 32, 32, 32], "layers_per_block": 1, "sample_size": 64}

TINY_TEXT_CONFIG = {
    **SD2_TEXT_CONFIG,
    "vocab_size": 64,
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "projection_dim": 32,
    "bos_token_id": 62,
    "eos_token_id": 63,
}

GEOMETRIES = {
    "sd2": (SD2_UNET_CONFIG, SD2_VAE_CONFIG, SD2_TEXT_CONFIG),
    "tiny": (TINY_UNET_CONFIG, TINY_VAE_CONFIG, TINY_TEXT_CONFIG),
}


def geometry_configs(geometry: str) -> tuple[dict, dict, dict]:
    """Deep copies of the (unet, vae, text encoder) configs of a named geometry (``sd2`` or ``tiny``)."""
    if geometry not in GEOMETRIES:
        raise ValueError(f"`geometry` must be one of {sorted(GEOMETRIES)}, got {geometry!r}")
    return tuple(copy.deepcopy(c) for c in GEOMETRIES[geometry])


def random_unet(config: dict, seed: int | None = None):
    """A diffusers ``UNet2DConditionModel`` with random weights (seeded if ``seed`` is given)."""
    from diffusers import UNet2DConditionModel

    if seed is not None:
        torch.manual_seed(seed)
    return UNet2DConditionModel(**config).eval()


def random_vae(config: dict, seed: int | None = None):
    """A diffusers ``AutoencoderKL`` with random weights (seeded if ``seed`` is given)."""
    from diffusers import AutoencoderKL

    if seed is not None:
        torch.manual_seed(seed)
    return AutoencoderKL(**config).eval()


def random_text_encoder(config: dict, seed: int | None = None):
    """A transformers ``CLIPTextModel`` with random weights (seeded if ``seed`` is given)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    if seed is not None:
        torch.manual_seed(seed)
    return CLIPTextModel(CLIPTextConfig(**config)).eval()


def byte_alphabet() -> list[str]:
    """The 256 printable stand-ins for bytes of byte-level BPE, in CLIP's order (GPT-2's ``bytes_to_unicode``)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


def _merges(symbols: str):
    """Merge rules over ``symbols``: every pair, then every pair extended by a third symbol (word-final ``</w>``
    variants beside each); each rule's parts exist before it (a valid BPE merge list)."""
    for a, b in itertools.product(symbols, repeat=2):
        yield a, b
        yield a, b + "</w>"
    for a, b, c in itertools.product(symbols, repeat=3):
        yield a + b, c
        yield a + b, c + "</w>"


def write_clip_tokenizer(folder: str | Path, vocab_size: int) -> Path:
    """Write a working byte-level BPE CLIP tokenizer of ``vocab_size`` tokens whose last two ids are BOS and EOS.

    Small sizes (up to 76) hold single ASCII characters only, enough for the empty prompt and short text. From 514
    on, the vocabulary is laid out like OpenAI's (256 byte symbols, the same with ``</w>``, merges, BOS, EOS), so
    SD2's 49408 gives BOS 49406 and EOS 49407, as the real tokenizer does; the merges are made up (pairs and
    triples of letters and digits), so text tokenizes differently from the real vocabulary.
    """
    folder = Path(folder)
    specials = ["<|startoftext|>", "<|endoftext|>"]
    merges: list[tuple[str, str]] = []
    if vocab_size - len(specials) >= 512:
        alphabet = byte_alphabet()
        tokens = alphabet + [c + "</w>" for c in alphabet]
        rules = _merges("abcdefghijklmnopqrstuvwxyz0123456789")
        while len(tokens) < vocab_size - len(specials):
            a, b = next(rules)
            merges.append((a, b))
            tokens.append(a + b)
    else:
        chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [chr(c) for c in range(ord("0"), ord("9") + 1)]
        tokens = (["!", "\""] + chars + [c + "</w>" for c in chars])[: vocab_size - len(specials)]
    tokens += specials
    if len(tokens) != vocab_size or len(set(tokens)) != vocab_size:
        raise ValueError(f"`vocab_size` must be between 4 and 76, or at least 514, got {vocab_size}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "model_max_length": 77, "bos_token": specials[0], "eos_token": specials[1],
        "unk_token": specials[1], "pad_token": "!", "tokenizer_class": "CLIPTokenizer",
    }))
    return folder


def write_random_pipeline(folder: str | Path, geometry: str = "tiny", seed: int = 0,
                          with_text_encoder: bool = True) -> Path:
    """Write a complete FiffDepth checkpoint in the official diffusers layout, with random weights.

    ``folder`` gets ``model_index.json``, ``unet/``, ``vae/`` and (if ``with_text_encoder``) ``text_encoder/`` and
    ``tokenizer/``. Each model is written and freed before the next is built (the ``sd2`` UNet alone is 3.5 GB).
    """
    folder = Path(folder)
    unet_cfg, vae_cfg, text_cfg = geometry_configs(geometry)
    random_unet(unet_cfg, seed).save_pretrained(folder / "unet")
    random_vae(vae_cfg, seed + 1).save_pretrained(folder / "vae")
    if with_text_encoder:
        random_text_encoder(text_cfg, seed + 2).save_pretrained(folder / "text_encoder")
        write_clip_tokenizer(folder / "tokenizer", text_cfg["vocab_size"])
    (folder / "model_index.json").write_text(json.dumps(pipeline_index(with_text_encoder), indent=2))
    return folder
