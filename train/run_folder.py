"""A training run's folder: resolved config, resumable checkpoints, and exports.

Layout::

    RUN/config.yaml                   the resolved config (written once; a resume must match it)
    RUN/checkpoints/step-00001000/    accelerate state (UNet, optimizer, LR schedule, EMA, RNG) + trainer.json
    RUN/best/                         the best validated model, official diffusers layout
    RUN/export/                       the final model, official diffusers layout (+ fiffdepth.safetensors bundle)
    RUN/logs/                         TensorBoard
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import yaml

from .config import config_differences

log = logging.getLogger(__name__)


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"

    def claim(self, config: dict, resuming: bool) -> None:
        """Create the run folder and save the config; on resume, refuse a config that differs."""
        saved = self.path / "config.yaml"
        if saved.is_file():
            previous = yaml.safe_load(saved.read_text())
            if not resuming:
                raise FileExistsError(f"{self.path} already holds a run; pass --resume latest to continue it or "
                                      "choose another --output-dir")
            changed = config_differences(previous, config)
            if changed:
                raise ValueError(f"cannot resume {self.path}: it was trained with another config:\n  "
                                 + "\n  ".join(changed) + "\n(only run-control keys such as train.max_steps may "
                                 "change on resume)")
        elif resuming:
            raise FileNotFoundError(f"--resume: {self.path} holds no run (no config.yaml)")
        self.path.mkdir(parents=True, exist_ok=True)
        saved.write_text(yaml.safe_dump(config, sort_keys=False))

    def folder(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:08d}"

    def has(self, step: int) -> bool:
        """Whether a complete checkpoint of ``step`` exists."""
        return (self.folder(step) / "trainer.json").is_file()

    def latest(self) -> Path | None:
        steps = sorted(self.checkpoints.glob("step-*"))
        complete = [p for p in steps if (p / "trainer.json").is_file()]
        return complete[-1] if complete else None

    def resolve(self, which: str) -> Path:
        if which == "latest":
            found = self.latest()
            if found is None:
                raise FileNotFoundError(f"--resume latest: no complete checkpoint in {self.checkpoints}")
            return found
        path = Path(which)
        if not (path / "trainer.json").is_file():
            raise FileNotFoundError(f"--resume {which}: not a checkpoint folder (no trainer.json)")
        return path

    def set_aside_later(self, folder: Path, accelerator) -> None:
        """Resuming from an older checkpoint starts a new timeline: later checkpoints move to
        ``checkpoints/abandoned/`` (kept, never deleted) so that ``latest`` and the rotation see only this one."""
        later = [p for p in sorted(self.checkpoints.glob("step-*")) if p.name > folder.name]
        if later and accelerator.is_main_process:
            aside = self.checkpoints / "abandoned"
            aside.mkdir(exist_ok=True)
            for path in later:
                target = aside / path.name
                suffix = 1
                while target.exists():
                    target, suffix = aside / f"{path.name}.{suffix}", suffix + 1
                path.rename(target)
            log.warning("resumed from %s: moved %d later checkpoint(s) to %s", folder.name, len(later), aside)
        accelerator.wait_for_everyone()

    def save(self, accelerator, step: int, state: dict, keep: int) -> Path:
        """Save accelerate's state and ours (trainer.json last: its presence marks a complete checkpoint)."""
        folder = self.folder(step)
        if accelerator.is_main_process:
            (folder / "trainer.json").unlink(missing_ok=True)  # incomplete until the new trainer.json lands
        accelerator.wait_for_everyone()
        accelerator.save_state(str(folder))
        if accelerator.is_main_process:
            (folder / "trainer.json").write_text(json.dumps({**state, "step": step}, indent=2))
            for old in sorted(self.checkpoints.glob("step-*"))[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return folder

    @staticmethod
    def load(accelerator, folder: Path) -> dict:
        accelerator.load_state(str(folder))
        return json.loads((folder / "trainer.json").read_text())


def export_model(unet, vae, embed, out_dir: Path, base_dir: Path | None, single_file: bool, dtype) -> Path:
    """The official diffusers layout (plus a one-file bundle on request) that FiffDepthLoader and the CLI load."""
    from fiffdepth_core.export import export_bundle, export_diffusers

    text_dir = base_dir / "text_encoder" if base_dir is not None and (base_dir / "text_encoder").is_dir() else None
    tok_dir = base_dir / "tokenizer" if base_dir is not None and (base_dir / "tokenizer").is_dir() else None
    export_diffusers(out_dir, unet, vae, embed, text_dir, tok_dir, dtype=dtype, overwrite=True)
    if single_file:
        export_bundle(out_dir / "fiffdepth.safetensors", unet, vae, embed, dtype=dtype, overwrite=True)
    log.info("exported %s", out_dir)
    return out_dir
