"""Installing catalogue models: on disk first, then (only if needed) from the Hugging Face Hub, verified.

* A model is installed when ``<root>/<id>/`` holds every file of its record. That is checked on disk alone: an
  installed model is used with no network request at all.
* ``HF_HUB_OFFLINE=1`` means no request: a missing model ends in one line naming the model, the folder and the
  command that fetches it elsewhere.
* Downloads go through ``huggingface_hub`` (imported lazily; hub 0.26 to 2.x), so ``HF_ENDPOINT`` (mirrors), proxies
  from the environment and ``HF_TOKEN`` behave as the hub client defines them. Files land in a staging folder beside
  the models (``<root>/.fiffdepth-downloads/<id>/``), where an interrupted download resumes; the model folder appears
  only when every file is whole: a partial model is never offered as installed.
* Every file is checked against the size and hash the hub announces for the pinned commit (sha256 for weights, the
  git blob id for small files) before the folder is moved in; a damaged file is fetched once more, then refused.
* Free disk space is checked before the first byte; every failure is one line (:class:`DownloadError`).

Progress goes to a callback ``progress(done_bytes, total_bytes)`` so each host shows it its own way; ``interrupt()``
(optional) is polled and may raise to cancel.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

from .catalogue import CatalogueModel, human_size
from .hub_client import (PARTIAL, DownloadError, announced_files, fetch_file, hub_endpoint, offline,
                         run_interruptible)

log = logging.getLogger(__name__)

MANIFEST = ".fiffdepth-model.json"  # written last into a verified download: what was checked, against what
STAGING = ".fiffdepth-downloads"  # beside the models: partial downloads (hidden: never listed as checkpoints)
DISK_MARGIN = 64 * 1024**2
Progress = Callable[[int, int], None]


def default_models_dir() -> Path:
    """The CLI's model folder: ``$FIFFDEPTH_MODELS``, else the user cache (``~/.cache/fiffdepth/models``,
    ``$XDG_CACHE_HOME/fiffdepth/models``, ``%LOCALAPPDATA%\\fiffdepth\\models`` on Windows)."""
    if os.environ.get("FIFFDEPTH_MODELS"):
        return Path(os.environ["FIFFDEPTH_MODELS"]).expanduser()
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "fiffdepth" / "models"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "fiffdepth" / "models"


def model_state(model: CatalogueModel, root: str | Path, fp32: bool = False) -> tuple[str, str]:
    """(``installed`` | ``missing`` | ``partial`` | ``damaged``, detail) from the disk alone."""
    folder = Path(root) / model.id
    if folder.is_dir():
        problems = _check_installed(model, folder, fp32)
        return ("damaged", problems[0]) if problems else ("installed", str(folder))
    staged = Path(root) / STAGING / model.id
    if staged.is_dir():
        return "partial", f"{human_size(_bytes_in(staged))} of about {human_size(model.size)} in {staged}"
    return "missing", str(folder)


def installed_path(model: CatalogueModel, root: str | Path, fp32: bool = False) -> Path | None:
    state, _ = model_state(model, root, fp32)
    return Path(root) / model.id if state == "installed" else None


def _check_installed(model: CatalogueModel, folder: Path, fp32: bool) -> list[str]:
    """What is wrong with an installed folder (empty when complete). Folders this module wrote carry a manifest of
    verified sizes; a folder placed by hand only needs every file present."""
    manifest = _read_manifest(folder)
    recorded = manifest.get("files", {}) if manifest else {}
    problems = []
    for name in model.files_for(fp32):
        path = folder / name
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif name in recorded and path.stat().st_size != recorded[name]["size"]:
            problems.append(f"{path} has {path.stat().st_size} bytes, {recorded[name]['size']} were verified")
    return problems


def _read_manifest(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def ensure_model(model: CatalogueModel, root: str | Path, progress: Progress | None = None,
                 interrupt: Callable[[], None] | None = None, fp32: bool = False) -> Path:
    """The installed folder of ``model`` under ``root``, downloading it first if it is not there."""
    root = Path(root).expanduser()
    folder = root / model.id
    state, detail = model_state(model, root, fp32)
    if state == "installed":
        return folder
    if offline():
        raise DownloadError(f"model {model.id} is not installed ({detail}) and HF_HUB_OFFLINE is set, so nothing is "
                            "downloaded", f"on a machine with network run `python -m fiffdepth_core download "
                            f"{model.id} --dest DIR` and copy DIR/{model.id} to {folder}")
    if folder.exists() and _read_manifest(folder) is None:
        raise DownloadError(f"{folder} exists but is not a complete {model.id} ({detail}) and was not made by "
                            "FiffDepth's download, so it is left alone", "complete it, or move it away to download "
                            "the model there")
    from filelock import FileLock  # a huggingface_hub dependency

    (root / STAGING).mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / STAGING / f"{model.id}.lock")):  # another process may be fetching the same model
        if installed_path(model, root, fp32) is not None:
            return folder
        _download(model, root, progress, interrupt, fp32)
    return folder


def _download(model: CatalogueModel, root: Path, progress: Progress | None, interrupt, fp32: bool) -> None:
    names = model.files_for(fp32)
    endpoint = hub_endpoint()
    log.info("downloading %s (%s, about %s) from %s into %s", model.id, model.repo, human_size(model.size), endpoint,
             root / model.id)
    announced = run_interruptible(lambda: announced_files(model, names, endpoint), None, interrupt)
    total = sum(a.size for a in announced.values())
    staging = root / STAGING / model.id
    staging.mkdir(parents=True, exist_ok=True)
    _check_space(model, root, staging, announced, total)

    def report() -> None:
        if progress is not None:
            progress(min(_bytes_in(staging), total), total)

    for name in names:
        expected, target = announced[name], staging / name
        if target.is_file() and _verify(target, expected) is None:
            continue  # whole from an earlier, interrupted run: no request
        for attempt in (1, 2):
            _discard(staging, name)
            run_interruptible(lambda: fetch_file(model, name, staging, endpoint), report, interrupt)
            problem = _verify(target, expected)
            if problem is None:
                break
            _discard(staging, name)
            if attempt == 2:
                raise DownloadError(f"model {model.id}: {name} from {endpoint} does not match what the hub announces "
                                    f"({problem}) twice in a row, so it is refused and nothing was installed",
                                    "try again later or from another mirror (HF_ENDPOINT)")
            log.warning("%s: %s does not match the hub's announcement (%s); fetching it again", model.id, name, problem)
    report()
    _install(model, root, staging, announced, endpoint)


def _check_space(model: CatalogueModel, root: Path, staging: Path, announced: dict, total: int) -> None:
    needed = total - _bytes_in(staging) + DISK_MARGIN
    free = shutil.disk_usage(root).free
    if needed > free:
        raise DownloadError(f"not enough disk space for {model.id} in {root}: it needs {human_size(needed)} more and "
                            f"{human_size(free)} are free", "free some space, or download it to another disk "
                            f"(`python -m fiffdepth_core download {model.id} --dest DIR`, FIFFDEPTH_MODELS)")


def _verify(path: Path, expected) -> str | None:
    """None when ``path`` has the announced size and hash, else what differs."""
    if not path.is_file():
        return "the file is missing after the download"
    size = path.stat().st_size
    if size != expected.size:
        return f"{size} bytes instead of {expected.size}"
    if expected.sha256:
        digest = _hash(path, hashlib.sha256())
        return None if digest == expected.sha256 else f"sha256 {digest[:12]}... instead of {expected.sha256[:12]}..."
    if expected.git_oid:  # small files: the git blob id is sha1 over "blob <size>\0" + content
        digest = _hash(path, hashlib.sha1(f"blob {size}\0".encode()))
        return None if digest == expected.git_oid else \
            f"git blob id {digest[:12]}... instead of {expected.git_oid[:12]}..."
    return None


def _hash(path: Path, digest) -> str:
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _discard(staging: Path, name: str) -> None:
    """Remove a staged file that is not whole, so the next attempt fetches it from the start."""
    (staging / name).unlink(missing_ok=True)


def _install(model: CatalogueModel, root: Path, staging: Path, announced: dict, endpoint: str) -> None:
    """Write the manifest and move the verified staging folder into place (replacing an earlier download of ours)."""
    manifest = {"id": model.id, "repo": model.repo, "revision": model.revision, "endpoint": endpoint,
                "downloaded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "files": {name: {"size": a.size, "sha256": a.sha256, "git_oid": a.git_oid}
                          for name, a in announced.items()}}
    shutil.rmtree(staging / PARTIAL, ignore_errors=True)
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
    folder = root / model.id
    old = root / STAGING / f"{model.id}.replaced"
    if folder.exists():  # an earlier, damaged download of ours (checked by the caller)
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(staging, folder)
    shutil.rmtree(old, ignore_errors=True)
    log.info("installed %s in %s", model.id, folder)


def _bytes_in(folder: Path) -> int:
    """Bytes of downloaded data under a staging folder (finished and partial files; not the small bookkeeping)."""
    total = 0
    for path in folder.rglob("*"):
        if path.is_file() and not path.name.endswith(".lock"):
            try:
                total += path.stat().st_size
            except OSError:  # renamed meanwhile by the download thread
                pass
    return total
