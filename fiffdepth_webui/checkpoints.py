"""Where a WebUI keeps FiffDepth checkpoints, which one is used, and the catalogue models it can download.

Nothing here touches the network: the settings list what is on disk plus the catalogue (a constant), and a catalogue
model is only downloaded when a preprocessor first runs with it (:mod:`fiffdepth_webui.estimator`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fiffdepth_core.weights import CATALOGUE, DEFAULT_ID, CatalogueModel, find_checkpoints, find_model, get_model
from fiffdepth_core.weights import installed_path as catalogue_path

FIRST_FOUND = "(first found)"
FLAG = "--fiffdepth-checkpoint"


class NoCheckpointError(FileNotFoundError):
    """The chosen checkpoint is not installed and cannot be downloaded (or the flag's path is gone)."""


@dataclass(frozen=True)
class Choice:
    """The checkpoint to run: an installed ``path``, and the catalogue ``model`` it is (to download when ``path`` is
    None)."""

    path: Path | None
    model: CatalogueModel | None = None


def model_roots(models_path: str | Path, preprocessor_dir: str | Path | None = None) -> list[Path]:
    """``models/fiffdepth`` and, on Forge/reForge, ``models/ControlNetPreprocessor/fiffdepth``. Downloads go to the
    first."""
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


def installed_model(model: CatalogueModel, roots: list[Path]) -> Path | None:
    return next((p for p in (catalogue_path(model, root) for root in roots) if p is not None), None)


def menu(roots: list[Path]) -> list[str]:
    """Settings choices: the first-found default, installed checkpoints, then catalogue models not installed yet
    (with their download size)."""
    names = installed(roots)
    missing = [m.label for m in CATALOGUE if m.id not in names and installed_model(m, roots) is None]
    return [FIRST_FOUND, *names, *missing]


def resolve(roots: list[Path], choice: str | None = None, flag: str | None = None) -> Choice:
    """The checkpoint to use: the command-line flag, else the settings choice, else the first one installed, else
    the catalogue's default model (downloaded on first use)."""
    if flag:
        path = Path(flag).expanduser()
        if not path.exists():
            raise NoCheckpointError(f"FiffDepth: {FLAG} points at {path}, which does not exist")
        return Choice(path)
    found = installed(roots)
    if not choice or choice == FIRST_FOUND:
        if found:
            name, path = next(iter(found.items()))
            return Choice(path, find_model(name))
        model = get_model(DEFAULT_ID)
        return Choice(installed_model(model, roots), model)
    if choice in found:
        return Choice(found[choice], find_model(choice))
    model = find_model(choice)
    if model is not None:
        return Choice(installed_model(model, roots), model)
    raise NoCheckpointError(f"FiffDepth: the checkpoint chosen in Settings -> FiffDepth, {choice!r}, is neither "
                            f"installed nor a catalogue model; installed: {', '.join(found) or 'none'}")
