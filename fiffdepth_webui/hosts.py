"""Which WebUI is running, and each host's policies (devices, dtypes, memory, cancel) as a ``HostPolicy``.

* **Forge**: ``modules_forge`` and Forge's ``backend`` package: the model runs on Forge's backend
  (:mod:`fiffdepth_webui.forge_backbone`), under ``memory_management``.
* **reForge**: ``modules_forge`` and the ``ldm_patched`` ComfyUI port: the standalone (diffusers) backbone on
  ``ldm_patched``'s device choice.
* **AUTOMATIC1111** with sd-webui-controlnet (>= 1.1.445, its ``Preprocessor`` API): the standalone backbone on
  ControlNet's device (``--use-cpu``), fp32 under ``--no-half``, under ``--lowvram/--medvram`` the SD model sent
  to the CPU first and FiffDepth's sent back after each run, memory given back by ``unload_model()``.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import torch

from fiffdepth_core.method import free_memory, resolve_dtypes
from fiffdepth_core.weights import load_standalone

from .checkpoints import model_roots

log = logging.getLogger("fiffdepth")

OPTION_CHECKPOINT, OPTION_PRECISION = "fiffdepth_checkpoint", "fiffdepth_precision"
OPTION_FAMILY = "fiffdepth_family"


def _module(name: str):
    try:
        return importlib.import_module(name)
    except Exception:  # absent, or broken in a way that means "not this host"
        return None


def detect_host() -> tuple[str | None, str]:
    """(``"forge"``, ``"reforge"``, ``"a1111"`` or None, a one-line reason)."""
    if hasattr(_module("modules_forge.shared"), "add_supported_preprocessor"):
        if _module("backend.patcher.unet") is not None:
            return "forge", "Forge backend"
        if _module("ldm_patched.modules.model_management") is not None:
            return "reforge", "reForge (ldm_patched)"
        return None, "a modules_forge WebUI without Forge's backend or ldm_patched (unknown fork)"
    if _module("scripts.supported_preprocessor") is not None:
        return "a1111", "sd-webui-controlnet's Preprocessor API"
    return None, ("no ControlNet preprocessor registry found: install sd-webui-controlnet (>= 1.1.445) in "
                  "AUTOMATIC1111, or use Forge, whose ControlNet is built in")


def _options():
    from modules import shared

    return shared.opts, shared.cmd_opts


class WebUIPolicy:
    """What every WebUI shares: model folders, the settings section, the command-line flag, the interrupt flag."""

    def __init__(self, preprocessor_dir: str | None = None):
        from modules import paths_internal

        self.models_path = paths_internal.models_path
        self.preprocessor_dir = preprocessor_dir

    def roots(self) -> list[Path]:
        return model_roots(self.models_path, self.preprocessor_dir)

    def selection(self):
        opts, cmd_opts = _options()
        data = getattr(opts, "data", {}) or {}
        return (data.get(OPTION_CHECKPOINT), data.get(OPTION_PRECISION) or "auto",
                getattr(cmd_opts, "fiffdepth_checkpoint", None), data.get(OPTION_FAMILY) or "auto")

    def interrupt(self) -> None:
        from modules import shared

        if getattr(shared.state, "interrupted", False):
            raise InterruptedError("FiffDepth: interrupted")


class ForgePolicy(WebUIPolicy):
    def __init__(self):
        from modules_forge.shared import preprocessor_dir

        super().__init__(preprocessor_dir)

    def build(self, path: Path, precision: str, family: str = "auto"):
        from .forge_backbone import ForgeBackbone

        return ForgeBackbone.load(path, precision, family)

    def prepare(self, backbone) -> None:  # the verbs load through memory_management themselves
        return None

    def free_bytes(self, backbone) -> int | None:
        from backend import memory_management

        return int(memory_management.get_free_memory(backbone.device))

    def release(self, backbone) -> None:
        from backend import memory_management

        memory_management.soft_empty_cache()

    def finish(self, backbone) -> None:  # memory_management offloads when the next model needs the room
        return None


class StandalonePolicy(WebUIPolicy):
    """The diffusers backbone, kept on the CPU while idle and moved to the host's device for each run."""

    def device(self) -> torch.device:
        raise NotImplementedError

    def full_precision_forced(self) -> bool:
        return False

    def make_room(self) -> None:
        return None

    def dtypes(self, precision: str) -> tuple[torch.dtype, torch.dtype]:
        device = self.device()
        if self.full_precision_forced():
            if precision not in ("auto", "fp32"):
                log.info("FiffDepth: --no-half is set: running in fp32 instead of %s", precision)
            return torch.float32, torch.float32
        return resolve_dtypes(precision, device)

    def build(self, path: Path, precision: str, family: str = "auto"):
        unet_dtype, vae_dtype = self.dtypes(precision)
        return load_standalone(path, device="cpu", dtype=unet_dtype, vae_dtype=vae_dtype, family=family)

    def prepare(self, backbone) -> None:
        self.make_room()
        backbone.to(self.device())

    def free_bytes(self, backbone) -> int | None:
        return free_memory(backbone.device)

    def release(self, backbone) -> None:
        backbone.to(torch.device("cpu"))
        self.empty_cache()

    def finish(self, backbone) -> None:
        if self.low_memory():  # the SD model needs the room back for sampling
            self.release(backbone)

    def low_memory(self) -> bool:
        return False

    def empty_cache(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class A1111Policy(StandalonePolicy):
    def device(self) -> torch.device:
        from modules import devices

        return torch.device(devices.get_device_for("controlnet"))

    def full_precision_forced(self) -> bool:
        return bool(getattr(_options()[1], "no_half", False))

    def low_memory(self) -> bool:
        return any(getattr(_options()[1], flag, False) for flag in ("lowvram", "medvram", "medvram_sdxl"))

    def make_room(self) -> None:
        if self.low_memory():
            from modules import lowvram

            lowvram.send_everything_to_cpu()

    def empty_cache(self) -> None:
        from modules import devices

        devices.torch_gc()


class ReForgePolicy(StandalonePolicy):
    def __init__(self):
        from modules_forge.shared import preprocessor_dir

        super().__init__(preprocessor_dir)

    def device(self) -> torch.device:
        from ldm_patched.modules import model_management

        return torch.device(model_management.get_torch_device())

    def make_room(self) -> None:
        from ldm_patched.modules import model_management

        model_management.free_memory(2 * 1024**3, self.device())  # unload the host's models if memory is short

    def empty_cache(self) -> None:
        from ldm_patched.modules import model_management

        model_management.soft_empty_cache()


POLICIES = {"forge": ForgePolicy, "reforge": ReForgePolicy, "a1111": A1111Policy}
