"""The preprocessors' shared engine: pick the checkpoint, keep the model cached, run the pass, return the hint.

Host specifics come in through a :class:`HostPolicy` (how to build the backbone, which device, how memory is made
room for and given back, how a cancel is seen), so this module imports no WebUI code and is tested offline.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from fiffdepth_core.method import (
    DEFAULT_TILE_SIZE,
    FAMILY_CHOICES,
    PRECISIONS,
    PredictConfig,
    plan_config,
    predict_depth,
)
from fiffdepth_core.weights import ensure_model, fingerprint, human_size, inspect_checkpoint

from .checkpoints import resolve
from .images import check_resolution, hint_image, image_tensor

log = logging.getLogger("fiffdepth")

PREPROCESSORS = {"depth_fiffdepth": "detailed", "depth_fiffdepth_filtered": "filtered"}


class HostPolicy(Protocol):
    def roots(self) -> list[Path]: ...

    def selection(self) -> tuple[str | None, str, str | None, str]: ...  # (choice, precision, flag path, family)

    def build(self, path: Path, precision: str, family: str): ...  # -> a fiffdepth_core Backbone

    def prepare(self, backbone) -> None: ...  # make room (offload the SD model), move the backbone to its device

    def free_bytes(self, backbone) -> int | None: ...

    def interrupt(self) -> None: ...  # raise to cancel

    def release(self, backbone) -> None: ...  # give memory back

    def finish(self, backbone) -> None: ...  # after each run (A1111 --lowvram/--medvram: release at once)


@dataclass
class Loaded:
    key: tuple
    backbone: object


class ConsoleProgress:
    """Download progress in the WebUI console: one line per tenth."""

    def __init__(self, name: str):
        self.name, self.shown = name, -1

    def __call__(self, done: int, total: int) -> None:
        tenth = 10 * done // max(total, 1)
        if tenth > self.shown:
            self.shown = tenth
            log.info("FiffDepth: downloading %s: %d%% (%s of %s)", self.name, 10 * tenth, human_size(done),
                     human_size(total))


class Estimator:
    """One per WebUI process; both preprocessors share it (and its cached model)."""

    def __init__(self, policy: HostPolicy):
        self.policy = policy
        self.loaded: Loaded | None = None

    def backbone(self):
        choice, precision, flag, family = self.policy.selection()
        if precision not in PRECISIONS:
            raise ValueError(f"FiffDepth precision must be one of {PRECISIONS}, got {precision!r}")
        if family not in FAMILY_CHOICES:
            raise ValueError(f"FiffDepth model family must be one of {', '.join(FAMILY_CHOICES)}, got {family!r}")
        roots = self.policy.roots()
        chosen = resolve(roots, choice, flag)
        if chosen.model is not None and family == "auto":
            family = chosen.model.family
        path = chosen.path
        if path is None:  # a catalogue model's first use: download it, as the annotators do
            path = ensure_model(chosen.model, roots[0], progress=ConsoleProgress(chosen.model.id),
                                interrupt=self.policy.interrupt)
        path = path.resolve()
        info = inspect_checkpoint(path, family)
        key = (str(path), precision, family, json.dumps(fingerprint(info)))  # re-exports reload
        if self.loaded is None or self.loaded.key != key:
            self.unload()
            start = time.perf_counter()
            self.loaded = Loaded(key, self.policy.build(path, precision, family))
            log.info("FiffDepth: loaded %s (%s, %s) in %.1f s", path, info.family.title, precision,
                     time.perf_counter() - start)
        return self.loaded.backbone

    def unload(self) -> bool:
        if self.loaded is None:
            return False
        self.policy.release(self.loaded.backbone)
        self.loaded = None
        return True

    def offload(self) -> bool:
        """Give the model's memory back but keep it cached (A1111's ``unload_model``)."""
        if self.loaded is None:
            return False
        self.policy.release(self.loaded.backbone)
        return True

    def depth(self, image, resolution, name: str) -> torch.Tensor:
        """Raw depth ``[1,H,W]`` (0 = near) of ``image`` for preprocessor ``name``."""
        resolution = check_resolution(resolution)
        images = image_tensor(image)  # [1,C,H,W]
        backbone = self.backbone()
        self.policy.prepare(backbone)
        config = PredictConfig(processing_resolution=resolution, depth_pass=PREPROCESSORS[name])
        vae_dtype = getattr(backbone, "vae_dtype", backbone.dtype)
        config = plan_config(config, images.shape, self.policy.free_bytes(backbone), backbone.dtype, vae_dtype,
                             "auto", DEFAULT_TILE_SIZE)
        upcast = getattr(backbone, "upcast", None) if backbone.dtype != torch.float32 else None
        try:
            return predict_depth(backbone, images, config, interrupt=self.policy.interrupt, fallback=upcast).cpu()
        finally:
            self.policy.finish(backbone)

    def hint(self, image, resolution, name: str) -> np.ndarray:
        """The ControlNet hint: ``H x W x 3`` uint8 at the input size, near = white."""
        return hint_image(self.depth(image, resolution, name))
