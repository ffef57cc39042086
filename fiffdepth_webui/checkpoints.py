"""Where a WebUI keeps FiffDepth checkpoints, which one is used, and the message when there is none."""

from __future__ import annotations

from pathlib import Path

from fiffdepth_core.weights import find_checkpoints

FIRST_FOUND = "(first found)"
FLAG = "--fiffdepth-checkpoint"


class NoCheckpointError(FileNotFoundError):
    """No FiffDepth checkpoint is installed (or the chosen one is gone)."""


def model_roots(models_path: str | Path, preprocessor_dir: str | Path | None = None) -> list[Path]:
    """``models/fiffdepth`` and, on Forge/reForge, ``models/ControlNetPreprocessor/fiffdepth``."""
    roots = [Path(models_path) / "fiffdepth"]
    if preprocessor_dir is not None:
        roots.append(Path(preprocessor_dir) / "fiffdepth")
    return roots


def installed(roots: list[Path]) -> dict[str, Path]:
    """Display name -> path of every checkpoint (diffusers folder, single-file folder, bundle) under ``roots``.
    A name found in two roots is shown with its root's parent folder name in front."""
    found: dict[str, Path] = {}
    for root in roots:
        for name in find_checkpoints(root):
            key = name if name not in found else f"{root.parent.name}/{name}"
            found[key] = root / name
    return found


def no_checkpoint_message(roots: list[Path]) -> str:
    places = " or ".join(str(r) for r in roots)
    return (f"FiffDepth: no checkpoint installed. Put one in {places} (a diffusers folder, a folder with "
            f"unet/vae .safetensors files, or a single .safetensors bundle), or start the WebUI with {FLAG} PATH. "
            "No official FiffDepth weights are public: train/finetune.py in the FiffDepth repository makes one.")


def resolve(roots: list[Path], choice: str | None = None, flag: str | None = None) -> Path:
    """The checkpoint to use: the command-line flag, else the settings choice, else the first one found."""
    if flag:
        path = Path(flag).expanduser()
        if not path.exists():
            raise NoCheckpointError(f"FiffDepth: {FLAG} points at {path}, which does not exist")
        return path
    found = installed(roots)
    if not found:
        raise NoCheckpointError(no_checkpoint_message(roots))
    if not choice or choice == FIRST_FOUND:
        return next(iter(found.values()))
    if choice not in found:
        raise NoCheckpointError(f"FiffDepth: the checkpoint chosen in Settings -> FiffDepth, {choice!r}, is not "
                                f"installed; found: {', '.join(found)}")
    return found[choice]
