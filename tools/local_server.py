"""A host server in a child process on a loopback port: pick the port, wait until it answers, stop it.

One copy for every host the tools and the real-host tests start (ComfyUI in ``comfy_server.py``, the WebUIs in
``tests/webui_host.py``). Standard library only.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


class ServerError(RuntimeError):
    """The server exited before it answered, or did not answer in time (the message ends with its log's tail)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str, timeout: float = 2.0) -> bool:
    """True when ``GET url`` returns HTTP 200; False while the server is not up yet (refused, reset, timed out,
    or an error status such as a 404 from a route that is registered late)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def log_tail(log_path: Path | None, chars: int = 4000) -> str:
    if log_path is None or not Path(log_path).is_file():
        return ""
    return Path(log_path).read_text(errors="replace")[-chars:]


def wait_until_ready(proc: subprocess.Popen, url: str, timeout: float, name: str, log_path: Path | None = None,
                     interval: float = 0.5, clock=time.monotonic, sleep=time.sleep) -> float:
    """Poll ``url`` until it answers 200; returns the seconds waited.

    Raises ``ServerError`` (with the log's tail) as soon as ``proc`` exits, or when ``timeout`` seconds pass
    without an answer. ``clock`` and ``sleep`` are for tests.
    """
    start = clock()
    while True:
        if proc.poll() is not None:
            raise ServerError(f"{name} exited early (exit code {proc.returncode}):\n{log_tail(log_path)}")
        if answers(url):
            return clock() - start
        if clock() - start > timeout:
            raise ServerError(f"{name} did not answer {url} within {timeout:g} s:\n{log_tail(log_path)}")
        sleep(interval)


def stop_process(proc: subprocess.Popen, timeout: float) -> None:
    """Terminate a child process, killing it if it has not exited after ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
