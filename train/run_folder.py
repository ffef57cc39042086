"""A training run's folder: resolved config, resumable checkpoints, and exports.

Layout::

    RUN/config.yaml                   the resolved config (written once; a resume must match it)
    RUN/checkpoints/step-00001000/    UNet, optimizer, LR schedule, EMA, RNG (safetensors/JSON) + trainer.json
    RUN/best/                         the best validated model, official diffusers layout
    RUN/export/                       the final model, official diffusers layout (+ fiffdepth.safetensors bundle;
                                      + fiffdepth_lora.safetensors for a LoRA run)
    RUN/logs/                         TensorBoard
    RUN/.lock                         held (OS file lock) by the process training in this folder; holds its pid

``config.yaml`` is written only once the config has validated and the models have built, so a start that fails
leaves a folder that a plain rerun can use. ``best`` and ``export`` are written beside their final place and
swapped in whole, so a crash mid-export never leaves parts of two different models together.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import yaml

from .config import config_differences
from .train_state import load_training_state, read_trainer_json, save_training_state

log = logging.getLogger(__name__)


class RunFolderError(RuntimeError):
    """The run folder cannot be used: another process holds it, or it is not a run of this config."""


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self._lock = None

    def lock(self) -> None:
        """Hold an OS file lock on ``RUN/.lock`` for the life of this process (released when it exits)."""
        try:
            import fcntl
        except ImportError:  # Windows: no fcntl; the lock is advisory anyway
            log.warning("no file locking on this platform: make sure only one run uses %s", self.path)
            return
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / ".lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RunFolderError(f"{self.path} is in use by another training process (pid {holder}); wait for it "
                                 "to finish (or stop it), or choose another --output-dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock = handle

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock
            self._lock = None

    def check(self, config: dict, resuming: bool) -> None:
        """Refuse, before anything is written: reuse without --resume, --resume of a config-less folder, a resume
        with another experiment config."""
        saved = self.path / "config.yaml"
        if saved.is_file():
            try:
                previous = yaml.safe_load(saved.read_text())
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
                raise RunFolderError(f"cannot read {saved}: {err}") from None
            if not resuming:
                raise FileExistsError(f"{self.path} already holds a run; pass --resume latest to continue it or "
                                      "choose another --output-dir")
            changed = config_differences(previous if isinstance(previous, dict) else {}, config)
            if changed:
                raise ValueError(f"cannot resume {self.path}: it was trained with another config:\n  "
                                 + "\n  ".join(changed) + "\n(only run-control keys such as train.max_steps may "
                                 "change on resume)")
        elif resuming:
            raise FileNotFoundError(f"--resume: {self.path} holds no run (no config.yaml)")

    def record(self, config: dict) -> None:
        """Save the resolved config (once the models have built): from now on the folder holds this run."""
        from fiffdepth_core.fileio import write_atomic

        text = yaml.safe_dump(config, sort_keys=False)
        write_atomic(self.path / "config.yaml", lambda tmp: tmp.write_text(text), overwrite=True)

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

    def save(self, accelerator, step: int, state: dict, keep: int, parts: tuple) -> Path:
        """Save the training state ``parts`` = (model, optimizer, scheduler, ema) and ours (trainer.json last:
        its presence marks a complete checkpoint)."""
        from fiffdepth_core.fileio import write_atomic

        folder = self.folder(step)
        if accelerator.is_main_process:
            (folder / "trainer.json").unlink(missing_ok=True)  # incomplete until the new trainer.json lands
        accelerator.wait_for_everyone()
        save_training_state(folder, accelerator, *parts)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            text = json.dumps({**state, "step": step}, indent=2)
            write_atomic(folder / "trainer.json", lambda tmp: tmp.write_text(text), overwrite=True)
            for old in sorted(self.checkpoints.glob("step-*"))[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return folder

    @staticmethod
    def load(accelerator, folder: Path, parts: tuple) -> dict:
        state = read_trainer_json(folder)
        load_training_state(folder, accelerator, *parts)
        return state


def swap_in(build, final: Path) -> Path:
    """Run ``build(tmp)`` on a sibling temporary folder, then swap it in for ``final`` (old aside, new in, old
    removed): readers see the old folder or the new one, never a mix."""
    tmp = final.with_name(f".{final.name}.partial-{os.getpid()}")
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        build(tmp)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not final.exists():
            old.rename(final)  # put the previous export back
        raise
    shutil.rmtree(old, ignore_errors=True)
    return final


def export_sources(unet, vae, base_dir: Path | None, config: dict):
    """What an export writes, as streamed sources: (UNet, VAE, LoRA file or None).

    The VAE is frozen, so it is written from the base model's files (full precision, even when training held it
    in bf16). A full fine-tune writes the live UNet; a LoRA run writes the merged UNet (base from its files + the
    adapter's delta) and the adapter as a kohya-layout LoRA file.
    """
    from fiffdepth_core.weights import inspect_checkpoint, stored_weights

    info = inspect_checkpoint(base_dir) if base_dir is not None else None
    stored_vae = stored_weights(info, "vae") if info is not None else None
    vae_source = stored_vae if stored_vae is not None else vae
    if not config["train"]["lora"]["enabled"]:
        return unet, vae_source, None
    from .lora import LORA_FILE, live_base_weights, lora_entries, lora_metadata, merged_weights

    base = stored_weights(info, "unet") if info is not None else None
    if base is None:
        log.warning("the base UNet is not in safetensors files: the merged export uses the frozen %s copy",
                    next(unet.parameters()).dtype)
        base = live_base_weights(unet)
    lora = (LORA_FILE, lora_entries(unet), lora_metadata(unet, config["train"]["lora"]))
    return merged_weights(unet, base), vae_source, lora


def export_model(unet, vae, embed, out_dir: Path, base_dir: Path | None, single_file: bool, dtype,
                 lora: tuple | None = None) -> Path:
    """The official diffusers layout (plus a one-file bundle on request, and a LoRA file when given) that
    FiffDepthLoader and the CLI load. ``unet``/``vae``: models or ``ModelWeights`` sources, written one tensor at a
    time; ``base_dir``: where the text encoder and tokenizer are copied from (None: left out)."""
    from fiffdepth_core.fileio import write_tensors
    from fiffdepth_core.weights import export_bundle, export_diffusers

    text_dir = base_dir / "text_encoder" if base_dir is not None and (base_dir / "text_encoder").is_dir() else None
    tok_dir = base_dir / "tokenizer" if base_dir is not None and (base_dir / "tokenizer").is_dir() else None

    def build(folder: Path) -> None:
        export_diffusers(folder, unet, vae, embed, text_dir, tok_dir, dtype=dtype, overwrite=True)
        if single_file:
            export_bundle(folder / "fiffdepth.safetensors", unet, vae, embed, dtype=dtype, overwrite=True)
        if lora is not None:
            name, entries, metadata = lora
            write_tensors(folder / name, entries, metadata, overwrite=True)

    swap_in(build, out_dir)
    log.info("exported %s", out_dir)
    return out_dir
