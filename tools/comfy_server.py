"""A headless ComfyUI for the workflow tools and the real-host tests: start it, post prompts, wait for results.

Standard library only. The server runs ``COMFYUI_PATH`` (or the folder given) on a free loopback port with a
temporary base directory into which this pack is linked; nothing listens beyond 127.0.0.1. ComfyUI's code is never
part of this repository: these helpers only drive a checkout the developer points at.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from local_server import free_port, stop_process, wait_until_ready

PACK_ROOT = Path(__file__).resolve().parents[1]


def _get(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


@contextmanager
def comfy_server(base_dir: Path, timeout: float = 120.0, comfyui_path: str | None = None,
                 front_end_root: str | Path | None = None, pack: Path | None = PACK_ROOT):
    """A headless ComfyUI on a free loopback port with ``base_dir`` as its base directory; yields its URL.

    ``comfyui_path`` defaults to the ``COMFYUI_PATH`` environment variable; ``front_end_root`` is passed as
    ``--front-end-root`` (a frontend package's ``static`` folder; default: the frontend ComfyUI pins). ``pack`` is
    linked into ``base_dir/custom_nodes`` as ``fiffdepth`` (None: the caller has filled ``custom_nodes``). The
    server is stopped at exit; its log is kept in ``base_dir/server.log``.
    """
    comfyui_path = comfyui_path or os.environ.get("COMFYUI_PATH")
    if not comfyui_path:
        raise RuntimeError("set COMFYUI_PATH to a ComfyUI checkout (or pass comfyui_path)")
    (base_dir / "custom_nodes").mkdir(parents=True, exist_ok=True)
    link = base_dir / "custom_nodes" / "fiffdepth"
    if pack is not None and not link.exists():
        link.symlink_to(pack, target_is_directory=True)
    port = free_port()
    log_path = base_dir / "server.log"
    log = open(log_path, "w")
    cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--disable-auto-launch", "--disable-api-nodes", "--use-pytorch-cross-attention",
           "--base-directory", str(base_dir)]
    if front_end_root is not None:
        cmd += ["--front-end-root", str(front_end_root)]
    proc = subprocess.Popen(cmd, cwd=comfyui_path, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(proc, url + "/system_stats", timeout, "ComfyUI", log_path)
        yield url
    finally:
        stop_process(proc, timeout=20)
        log.close()


def post_prompt(url: str, prompt: dict) -> tuple[int, dict]:
    """POST an API-format prompt; returns (HTTP status, JSON body)."""
    data = json.dumps({"prompt": prompt, "client_id": "fiffdepth-tests"}).encode()
    request = urllib.request.Request(url + "/prompt", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def wait_for(url: str, prompt_id: str, timeout: float = 300.0) -> dict:
    """Poll /history until the prompt finishes; returns its history entry (raises on error or timeout)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        history = _get(f"{url}/history/{prompt_id}")
        entry = history.get(prompt_id)
        if entry and entry.get("status", {}).get("completed"):
            return entry
        if entry and entry.get("status", {}).get("status_str") == "error":
            raise RuntimeError(f"prompt failed: {json.dumps(entry['status'])[:3000]}")
        time.sleep(0.5)
    raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")


def object_info(url: str, node: str | None = None) -> dict:
    return _get(url + "/object_info" + (f"/{node}" if node else ""))
