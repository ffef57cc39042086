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



@pytest.fixture
def cli_error(caplog):
    """``cli_error(argv)`` runs the command line in this process, checks that it failed with the one exit status
    for errors and logged exactly one error report, and returns that report as the user sees it: ``ERROR <what>:
    <value> (<allowed>)``, the details indented under it, the hint on the last line."""
    from fiffdepth_core.app.cli import main
    from fiffdepth_core.app.errors import EXIT_ERROR, ErrorFormatter

    def run(argv: list[str]) -> str:
        caplog.clear()
        with caplog.at_level(logging.INFO):
            code = main(argv)
        reports = [r for r in caplog.records if getattr(r, "hint", None)]
        assert code == EXIT_ERROR and len(reports) == 1, (code, caplog.text)
        return ErrorFormatter().format(reports[0])

    return run

