"""Helpers for tests against a real Stable-Diffusion WebUI (Forge, or AUTOMATIC1111 with sd-webui-controlnet).

Set ``FORGE_PATH`` + ``FORGE_PYTHON`` and/or ``A1111_PATH`` + ``A1111_PYTHON`` to a prepared WebUI checkout and the
Python of its environment (see the README's WebUI section for the preparation). The WebUI's code is never part of
this repository. Each server runs headless on a free loopback port with a temporary ``--data-dir`` (its own
config, ``extensions/`` with this repository linked in, ``models/fiffdepth``), so the checkout is not modified.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from local_server import free_port, stop_process, wait_until_ready  # tools/, on the test path
from PIL import Image

PACK_ROOT = Path(__file__).resolve().parents[1]
COMMON_FLAGS = ["--skip-prepare-environment", "--skip-torch-cuda-test", "--skip-python-version-check",
                "--skip-version-check", "--api", "--skip-load-model-at-start", "--no-download-sd-model",
                "--server-name", "127.0.0.1"]
HOSTS = {
    "forge": {"flags": ["--always-cpu"], "extensions": []},
    "a1111": {"flags": ["--use-cpu", "all", "--no-half", "--precision", "full"],
              "extensions": ["sd-webui-controlnet"]},
}


def host_paths(host: str) -> tuple[str | None, str | None]:
    prefix = host.upper()
    return os.environ.get(f"{prefix}_PATH"), os.environ.get(f"{prefix}_PYTHON")


def requires(host: str):
    path, python = host_paths(host)
    reason = (f"set {host.upper()}_PATH to a prepared {host} WebUI checkout and {host.upper()}_PYTHON to its "
              "environment's Python to run the real-host tests")
    return pytest.mark.skipif(not (path and python), reason=reason)


def http_json(url: str, payload: dict | None = None, timeout: float = 300.0) -> tuple[int, dict]:
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        body = err.read()
        try:
            return err.code, json.loads(body or b"{}")
        except json.JSONDecodeError:
            return err.code, {"raw": body.decode(errors="replace")}


def png_b64(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def decode_png(data: str) -> np.ndarray:
    if "," in data[:100]:
        data = data.split(",", 1)[1]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))


def prepare_data_dir(host: str, data_dir: Path) -> None:
    """``data_dir/extensions`` with this repository (and, for A1111, the host's sd-webui-controlnet) linked in."""
    path, _ = host_paths(host)
    extensions = data_dir / "extensions"
    extensions.mkdir(parents=True, exist_ok=True)
    links = {"fiffdepth": PACK_ROOT}
    links.update({name: Path(path) / "extensions" / name for name in HOSTS[host]["extensions"]})
    for name, target in links.items():
        if not (extensions / name).exists():
            (extensions / name).symlink_to(target, target_is_directory=True)


@contextmanager
def webui_server(host: str, data_dir: Path, extra_flags: list[str] = (), ui: bool = False, timeout: float = 300.0):
    """A headless WebUI on a free loopback port; yields (url, seconds until it answered, log path)."""
    path, python = host_paths(host)
    prepare_data_dir(host, data_dir)
    port = free_port()
    log_path = data_dir / "server.log"
    log = open(log_path, "w")
    cmd = [python, "launch.py", *COMMON_FLAGS, "--port", str(port), "--data-dir", str(data_dir),
           *HOSTS[host]["flags"], *extra_flags]
    if not ui:
        cmd.append("--nowebui")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=path, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(proc, url + "/controlnet/module_list", timeout, host, log_path)
        yield url, time.perf_counter() - start, log_path
    finally:
        stop_process(proc, timeout=30)
        log.close()


def startup_seconds(log_text: str) -> float | None:
    """The WebUI's own "Startup time: X s" line (A1111 and Forge print it once ready)."""
    match = re.search(r"Startup time: ([\d.]+)s", log_text)
    return float(match.group(1)) if match else None
