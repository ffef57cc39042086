"""Dependency check for hosts that run ``install.py`` (ComfyUI-Manager, A1111/Forge): idempotent, host-agnostic.

Installs only what ``requirements.txt`` lists and the running Python lacks (never torch: the host owns it), plus,
inside a WebUI without diffusers (AUTOMATIC1111), diffusers pinned so the WebUI's own pins hold; it never downloads
model weights. Set ``FIFFDEPTH_NO_INSTALL=1`` to report missing packages without installing.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parent / "requirements.txt"
# AUTOMATIC1111 ships no diffusers, which its FiffDepth route (the standalone backbone) needs. These pins keep
# A1111's own (transformers 4.30, huggingface_hub < 1.0) intact; Forge and reForge bring diffusers themselves.
WEBUI_STANDALONE = [("diffusers", "diffusers==0.31.0"), ("huggingface_hub", "huggingface_hub>=0.23.2,<1.0")]


def webui_root() -> Path | None:
    """The WebUI running this installer (A1111/Forge/reForge run it with their root as cwd and on PYTHONPATH)."""
    candidates = [Path.cwd(), *(Path(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    for root in candidates:
        if (root / "modules" / "paths_internal.py").is_file() and (root / "webui.py").is_file():
            return root
    return None


def requirements() -> list[tuple[str, str]]:
    """(distribution name, full requirement line) for each entry of requirements.txt."""
    entries = []
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            entries.append((re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0], line))
    return entries


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def satisfied(name: str, line: str) -> bool:
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    minimum = re.search(r">=\s*([\w.]+)", line)
    return minimum is None or _version_tuple(installed) >= _version_tuple(minimum.group(1))


def main() -> int:
    missing = [line for name, line in requirements() if not satisfied(name, line)]
    if webui_root() is not None and not satisfied("diffusers", "diffusers"):
        missing += [line for _, line in WEBUI_STANDALONE]  # hub pinned alongside, even if present
    if not missing:
        print("[FiffDepth] all requirements present")
        return 0
    if os.environ.get("FIFFDEPTH_NO_INSTALL") == "1":
        print(f"[FiffDepth] missing: {', '.join(missing)} (FIFFDEPTH_NO_INSTALL=1: not installing)")
        return 1
    print(f"[FiffDepth] installing: {', '.join(missing)}")
    return subprocess.call([sys.executable, "-m", "pip", "install", *missing])


if __name__ == "__main__":
    sys.exit(main())
