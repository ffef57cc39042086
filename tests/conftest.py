"""Shared fixtures: tiny seeded FiffDepth checkpoints built from config (offline, CPU)."""

from __future__ import annotations

import logging
import os

import pytest
import torch

from fiffdepth_core.weights.checkpoint import load_standalone
from fiffdepth_testkit.models import write_random_pipeline

torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
logging.getLogger("diffusers").setLevel(logging.ERROR)
logging.getLogger("transformers").setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A complete tiny checkpoint in the official diffusers layout (with text encoder and tokenizer).

    Session-scoped and treated as read-only; tests that modify a checkpoint make their own.
    """
    return write_random_pipeline(tmp_path_factory.mktemp("ckpt") / "tiny", geometry="tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_backbone(tiny_checkpoint):
    """The tiny checkpoint loaded as a standalone fp32 CPU backbone."""
    return load_standalone(tiny_checkpoint, device="cpu", dtype=torch.float32)

