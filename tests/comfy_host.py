"""Helpers for tests against a real ComfyUI (COMFYUI_PATH): in-process loading and a headless server.

ComfyUI's code is never part of this repository; these helpers only drive a checkout the developer points at.
ComfyUI's root goes first on sys.path so its top-level ``nodes`` module is never shadowed by this pack's folder.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import stop_process

PACK_ROOT = Path(__file__).resolve().parents[1]
COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
SKIP_REASON = ("set COMFYUI_PATH to a ComfyUI checkout (>= 0.3.48, with its requirements installed in this "
               "Python) to run the real-host tests")
requires_comfyui = pytest.mark.skipif(not COMFYUI_PATH, reason=SKIP_REASON)


def import_comfy(models_dir: Path, output_dir: Path):
    """Import ComfyUI in this process (CPU), point its fiffdepth/output folders at temp dirs, load the pack.

    Returns ComfyUI's ``nodes`` module, with this pack loaded by ``nodes.load_custom_node`` as ComfyUI does.
    """
    root = str(Path(COMFYUI_PATH).resolve())
    if root in sys.path:
        sys.path.remove(root)
    sys.path.insert(0, root)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # a CUDA build of torch without a GPU would crash model_management otherwise
    comfy.cli_args.args.disable_api_nodes = True
    comfy.cli_args.args.use_pytorch_cross_attention = True  # SDPA, as on CUDA (CPU default: sub-quadratic)
    import folder_paths

    folder_paths.add_model_folder_path("fiffdepth", str(models_dir), is_default=True)
    folder_paths.set_output_directory(str(output_dir))
    import nodes

    assert Path(nodes.__file__).resolve().parent == Path(root), f"`nodes` resolved to {nodes.__file__}"
    loaded = asyncio.run(nodes.load_custom_node(str(PACK_ROOT), module_parent="custom_nodes"))
    assert loaded, "ComfyUI could not import the pack (see the log above)"
    return nodes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


@contextmanager
def comfy_server(base_dir: Path, timeout: float = 120.0):
    """A headless ComfyUI on a free loopback port with ``base_dir`` as its base directory; yields its URL.

    The pack is linked into ``base_dir/custom_nodes``. The server is stopped at exit; its log is kept in
    ``base_dir/server.log``.
    """
    (base_dir / "custom_nodes").mkdir(parents=True, exist_ok=True)
    link = base_dir / "custom_nodes" / "fiffdepth"
    if not link.exists():
        link.symlink_to(PACK_ROOT, target_is_directory=True)
    port = _free_port()
    log = open(base_dir / "server.log", "w")
    cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--disable-auto-launch", "--disable-api-nodes", "--use-pytorch-cross-attention",
           "--base-directory", str(base_dir)]
    proc = subprocess.Popen(cmd, cwd=COMFYUI_PATH, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited early:\n{(base_dir / 'server.log').read_text()[-3000:]}")
            try:
                _get(url + "/system_stats", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.time() > deadline:
                    raise RuntimeError("ComfyUI did not answer within the timeout") from None
                time.sleep(0.5)
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
