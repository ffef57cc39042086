"""The few ``huggingface_hub`` calls downloads make, the same on hub 0.26 to 2.x, and their failures as one line.

Only long-stable functions are used: ``HfApi.model_info(files_metadata=True)`` for what the hub announces (sizes,
sha256, git blob ids), then per file ``hf_hub_url``, ``get_hf_file_metadata`` (the HEAD) and ``http_get`` (the
client's own streaming GET, with its retries, proxies, timeouts and ``Range`` resume), with ``build_hf_headers`` (the
token and user agent) for requests to the hub itself.
The endpoint and the offline switch are read from the environment at call time, as the hub client reads them at
import, so a host that sets them late is still obeyed.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ..fileio.errors import UserInputError
from .catalogue import CatalogueModel

TRUE = {"1", "on", "yes", "true"}
PARTIAL = ".partial"  # in a staging folder: files still arriving


class DownloadError(UserInputError):
    """A model could not be installed; the message is one line naming the model and the file, saying what to do."""

    what = "download"


@dataclass(frozen=True)
class Announced:
    """What the hub announces for one file at the pinned commit."""

    size: int
    sha256: str | None  # LFS files (weights)
    git_oid: str | None  # every file: the git blob id (sha1 of "blob <size>\\0" + content)


def offline() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub reads it (set now, or when the hub client was imported)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUE:
        return True
    hub = _hub_constants()
    return bool(getattr(hub, "HF_HUB_OFFLINE", False)) if hub is not None else False


def hub_endpoint() -> str:
    """``HF_ENDPOINT`` (a mirror), else the client's default, without a trailing slash."""
    value = os.environ.get("HF_ENDPOINT", "").strip()
    if not value:
        hub = _hub_constants()
        value = getattr(hub, "ENDPOINT", None) or "https://huggingface.co"
    return value.rstrip("/")


def _hub_constants():
    import sys

    return sys.modules.get("huggingface_hub.constants")  # only if a host already imported the client


def _hub():
    try:
        import huggingface_hub
    except ImportError:
        raise DownloadError("downloading models needs huggingface_hub, which is not installed",
                            "pip install huggingface_hub") from None
    return huggingface_hub


def announced_files(model: CatalogueModel, names, endpoint: str) -> dict[str, Announced]:
    """Size and hashes of each of ``names`` at the model's pinned commit (one model-info request)."""
    hub = _hub()
    try:
        info = hub.HfApi(endpoint=endpoint).model_info(model.repo, revision=model.revision, files_metadata=True)
    except Exception as err:
        raise DownloadError(*describe_failure(err, model, endpoint, "model info")) from err
    siblings = {s.rfilename: s for s in (info.siblings or [])}
    missing = [n for n in names if n not in siblings]
    if missing:
        raise DownloadError(f"model {model.id}: {model.repo} at {model.revision[:12]} on {endpoint} has no "
                            f"{', '.join(missing)}", "the mirror may hold another revision of the repository")
    found = {}
    for name in names:
        sibling = siblings[name]
        lfs = getattr(sibling, "lfs", None)
        sha256 = lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)
        size = sibling.size if sibling.size is not None else (getattr(lfs, "size", None) if lfs else None)
        if size is None:
            raise DownloadError(f"model {model.id}: {endpoint} announces no size for {name}, so it cannot be checked",
                                "use the Hugging Face Hub or a mirror that lists file sizes (HF_ENDPOINT)")
        found[name] = Announced(int(size), sha256, getattr(sibling, "blob_id", None))
    return found


def fetch_file(model: CatalogueModel, name: str, staging: Path, endpoint: str) -> Path:
    """One file into ``staging/name``, appending to what an earlier, interrupted attempt left (a ``Range`` request):
    hub 2.x's own ``hf_hub_download`` no longer resumes across runs, so the partial file is kept here, named after the
    file's etag (a file that changed upstream starts over)."""
    hub = _hub()
    from huggingface_hub.file_download import http_get

    url = hub.hf_hub_url(model.repo, name, revision=model.revision, endpoint=endpoint)
    try:
        meta = hub.get_hf_file_metadata(url)  # HEAD: size, etag, and where the bytes are (the CDN for weights)
        part = partial_path(staging, name, meta.etag or "noetag")
        part.parent.mkdir(parents=True, exist_ok=True)
        # the token goes to the hub only: a redirect to a CDN or storage host carries its own signature
        headers = hub.utils.build_hf_headers() if _same_host(meta.location, url) else {}
        with open(part, "ab") as handle:
            done = handle.tell()
            if meta.size is not None and done > meta.size:
                handle.truncate(0)
                done = 0
            if meta.size is None or done < meta.size:
                http_get(meta.location, handle, resume_size=done, headers=headers, expected_size=meta.size,
                         displayed_filename=name)
    except Exception as err:
        raise DownloadError(*describe_failure(err, model, endpoint, name)) from err
    target = staging / name
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, target)
    return target


def partial_path(staging: Path, name: str, etag: str) -> Path:
    return staging / PARTIAL / f"{name.replace('/', '%2F')}.{etag.strip(chr(34))[:16]}.part"


def _same_host(a: str, b: str) -> bool:
    from urllib.parse import urlsplit

    return urlsplit(a).netloc.lower() == urlsplit(b).netloc.lower()


def _names(err: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(err).__mro__}


def _status(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None)


def describe_failure(err: BaseException, model: CatalogueModel, endpoint: str, what: str) -> tuple[str, str]:
    """(what happened, what to do) for a failed hub call, naming the model and the file; one line each."""
    where = f"model {model.id}: {what} from {endpoint}"
    chain, cause = [err], err
    while (cause.__cause__ or cause.__context__) is not None and len(chain) < 8:
        cause = cause.__cause__ or cause.__context__
        chain.append(cause)
    names = set().union(*(_names(e) for e in chain))
    status = next((s for s in map(_status, chain) if s is not None), None)
    resume = "run it again to resume; nothing was installed"
    if "GatedRepoError" in names:
        return (f"{where}: {model.repo} is gated",
                "accept its terms on its hub page and set HF_TOKEN to a token of that account")
    if "RepositoryNotFoundError" in names:
        return (f"{where}: repository {model.repo} not found (HTTP {status})",
                "set HF_TOKEN if it is private; check HF_ENDPOINT")
    if "RevisionNotFoundError" in names:
        return (f"{where}: revision {model.revision} not found in {model.repo}",
                "the mirror may be out of date: use another (HF_ENDPOINT)")
    if "EntryNotFoundError" in names and status == 404:
        return (f"{where}: the file is not in {model.repo} at {model.revision[:12]} (HTTP 404)",
                "the mirror may hold another revision of the repository (HF_ENDPOINT)")
    if "OfflineModeIsEnabled" in names:
        return f"{where}: HF_HUB_OFFLINE is set, so nothing is downloaded", "unset HF_HUB_OFFLINE to download"
    if status is not None:
        hint = "the hub is unavailable: try again later or use a mirror (HF_ENDPOINT)" if status >= 500 else \
            "check HF_TOKEN and HF_ENDPOINT"
        return f"{where}: HTTP {status}", f"{hint}; {resume}"
    if names & {"Timeout", "TimeoutException", "ReadTimeout", "ConnectTimeout", "TimeoutError"}:
        return f"{where}: timed out", f"check the network or proxy (HTTPS_PROXY); {resume}"
    if names & {"ConnectionError", "ConnectError", "NetworkError", "ProxyError", "RemoteProtocolError",
                "ChunkedEncodingError", "LocalEntryNotFoundError"}:
        return (f"{where}: cannot reach the hub ({_short(chain[-1])})",
                f"check the network or proxy (HTTPS_PROXY), or use a mirror (HF_ENDPOINT); {resume}")
    if isinstance(err, OSError):
        return f"{where}: {_short(err)}", resume
    return f"{where}: {type(err).__name__}: {_short(err)}", resume


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:200]


class Cancelled(BaseException):
    """Raised inside the download thread when the host cancels."""


def run_interruptible(fn, poll=None, interrupt=None):
    """Run ``fn`` in a worker thread, calling ``poll()`` and ``interrupt()`` (which may raise to cancel) about five
    times a second from this one; a cancel or Ctrl-C stops the worker at its next Python step (a partial file stays
    for the next attempt to resume)."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as err:  # handed to the caller's thread
            box["error"] = err

    worker = threading.Thread(target=target, name="fiffdepth-download", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
            if poll is not None:
                poll()
            if interrupt is not None and worker.is_alive():
                interrupt()
    except BaseException:
        if worker.is_alive():
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(worker.ident), ctypes.py_object(Cancelled))
            worker.join(30)
        raise
    if "error" in box:
        raise box["error"]
    return box.get("value")
