"""The SD2 empty-prompt embedding shipped with the package: its values, when it is used, and that it ships."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from fiffdepth_core.weights import text_embed
from fiffdepth_core.weights.checkpoint import empty_embedding, inspect_checkpoint, load_standalone
from fiffdepth_core.weights.layout import CheckpointError
from fiffdepth_core.weights.text_embed import EMBED_FILE, sd2_constant, write_embedding
from fiffdepth_testkit.catalogue_repos import tiny_unet_config
from fiffdepth_testkit.models import (TINY_TEXT_CONFIG, TINY_VAE_CONFIG, random_text_encoder, random_unet, random_vae,
                                      write_minimal_clip_tokenizer)

ROOT = Path(__file__).resolve().parents[1]
# sha256 of the 2048 values as little-endian float32: the fingerprint of the numbers ComfyUI core's LotusConditioning
# inlines (comfy_extras/nodes_lotus.py at a125cd84), computed from that file independently of this package.
CORE_FINGERPRINT = "a7ba15b03c89931a7764a7d4b398201b322e00524d03efaac172b48dc637397d"


def test_the_shipped_values_are_sd2s_empty_prompt_embedding_as_core_inlines_it():
    embed = sd2_constant()
    assert embed.shape == (1, 2, 1024) and embed.dtype == torch.float32
    assert hashlib.sha256(embed.numpy().astype("<f4").tobytes()).hexdigest() == CORE_FINGERPRINT
    assert torch.equal(embed.half().float(), embed), "fp16-rounded values, stored exactly"
    norms = embed[0].norm(dim=-1)  # BOS and EOS token norms of the OpenCLIP-H output (known: 17.25 and 33.34)
    assert abs(norms[0].item() - 17.254) < 5e-3 and abs(norms[1].item() - 33.341) < 5e-3


def _folder(tmp_path: Path, text_width: int | None = None, cached: torch.Tensor | None = None) -> Path:
    """A tiny diffusers checkpoint with SD2's cross-attention width, optionally with a text encoder or a cache."""
    folder = tmp_path / "ckpt"
    random_unet(tiny_unet_config("fiffdepth"), 1).save_pretrained(folder / "unet")
    random_vae(TINY_VAE_CONFIG, 2).save_pretrained(folder / "vae")
    if text_width is not None:
        config = {**TINY_TEXT_CONFIG, "hidden_size": text_width, "projection_dim": text_width,
                  "num_hidden_layers": 1, "intermediate_size": 8, "num_attention_heads": 4}
        random_text_encoder(config, 3).save_pretrained(folder / "text_encoder")
        write_minimal_clip_tokenizer(folder / "tokenizer", config["vocab_size"])
    if cached is not None:
        write_embedding(folder / EMBED_FILE, cached)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "FiffDepthPipeline"}))
    return folder


def test_a_checkpoint_without_embedding_or_text_encoder_uses_the_constant_and_says_so_once(tmp_path, caplog,
                                                                                          monkeypatch):
    monkeypatch.setattr(text_embed, "_constant_logged", False)
    folder = _folder(tmp_path)
    with caplog.at_level(logging.INFO, logger="fiffdepth_core.weights.text_embed"):
        first = load_standalone(folder).empty_embed
        second = empty_embedding(inspect_checkpoint(folder))
    assert torch.equal(first, sd2_constant()) and torch.equal(second, sd2_constant())
    said = [r for r in caplog.records if "SD2 embedding shipped with FiffDepth" in r.getMessage()]
    assert len(said) == 1
    assert not (folder / EMBED_FILE).exists(), "the constant is never written as the checkpoint's own"


def test_a_checkpoints_own_embedding_always_wins(tmp_path):
    own = torch.randn(1, 2, 1024)
    assert torch.equal(load_standalone(_folder(tmp_path / "cached", cached=own)).empty_embed, own)
    folder = _folder(tmp_path / "text", text_width=1024)
    from_encoder = load_standalone(folder).empty_embed
    assert not torch.equal(from_encoder, sd2_constant())
    assert torch.equal(from_encoder, text_embed.compute_empty_embedding(folder / "text_encoder", folder / "tokenizer"))


def test_the_constant_only_fits_sd2_width_unets(tmp_path, tiny_checkpoint):
    folder = tmp_path / "narrow"
    shutil.copytree(tiny_checkpoint, folder)
    shutil.rmtree(folder / "text_encoder")  # cross_attention_dim 32: the constant cannot stand in
    # Loading the shared checkpoint elsewhere in the session caches its embedding beside it: not this case.
    (folder / "empty_text_embed.safetensors").unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match="fits cross_attention_dim 1024 only; this UNet's is 32"):
        inspect_checkpoint(folder)


@pytest.mark.slow
def test_the_wheel_carries_the_constant(tmp_path):
    """Package data: a wheel built from a clean copy of the tree holds the file (the editable install reads it from
    the tree). The copy leaves out build leftovers (an old *.egg-info lists the files an earlier build took)."""
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "*.egg-info", "build", "__pycache__",
                                                                "*.whl", "results"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                           str(tmp_path), str(source)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheel = next(tmp_path.glob("fiffdepth-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read("fiffdepth_core/weights/data/sd2_empty_prompt.safetensors")
    from safetensors.torch import load

    assert torch.equal(load(data)["empty_text_embed"].float(), sd2_constant())
