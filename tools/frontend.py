"""ComfyUI's own frontend in a headless Chromium, driven over the DevTools protocol (loopback only).

Used to check that the frontend loads the bundled workflows the way they are written (same slots, links and
widget values when it saves them again, same API prompt as ``workflow_api.ui_to_api``) and to take the
template thumbnails. Needs Debian's ``chromium`` and ``aiohttp`` (a ComfyUI requirement); callers skip without.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from comfy_server import comfy_server
from local_server import stop_process

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]

# Written into the server's user settings before it starts: no first-run template browser, no dialogs over the
# canvas (missing models are expected: templates name files the user downloads later).
QUIET_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Workflow.ShowMissingModelsWarning": False,
    "Comfy.Workflow.ShowMissingNodesWarning": False,
    "Comfy.Validation.Workflows": True,
    "Comfy.Minimap.Visible": False,
    "Comfy.Graph.CanvasInfo": False,
    "Comfy.Graph.CanvasMenu": False,
}


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def write_quiet_settings(base_dir: Path) -> None:
    """Frontend settings for a server started with ``--base-directory base_dir``."""
    folder = Path(base_dir) / "user" / "default"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "comfy.settings.json").write_text(json.dumps(QUIET_SETTINGS, indent=2))


class Page:
    """One browser tab: ``call`` sends a DevTools command, ``js`` evaluates an (awaited) expression."""

    def __init__(self, ws):
        self.ws, self.next_id, self.console = ws, 0, []

    async def call(self, method: str, **params):
        self.next_id += 1
        my_id = self.next_id
        await self.ws.send_json({"id": my_id, "method": method, "params": params})
        while True:
            message = await self.ws.receive_json()
            if message.get("id") == my_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            if message.get("method") == "Runtime.consoleAPICalled":
                args = message["params"].get("args", [])
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in args)
                self.console.append((message["params"].get("type"), text))
            elif message.get("method") == "Runtime.exceptionThrown":
                details = message["params"].get("exceptionDetails", {})
                self.console.append(("exception", json.dumps(details)[:2000]))

    async def js(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {json.dumps(result['exceptionDetails'])[:3000]}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 60.0, interval: float = 0.25):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if await self.js(expression):
                    return
            except RuntimeError:
                pass
            await asyncio.sleep(interval)
        raise TimeoutError(f"page never satisfied: {expression}")

    async def screenshot(self, clip: dict | None = None, fmt: str = "png", quality: int = 90) -> bytes:
        params = {"format": fmt, "captureBeyondViewport": False}
        if fmt == "jpeg":
            params["quality"] = quality
        if clip:
            params["clip"] = {**clip, "scale": clip.get("scale", 1)}
        return base64.b64decode((await self.call("Page.captureScreenshot", **params))["data"])


@asynccontextmanager
async def browser_page(width: int = 1600, height: int = 1000, scale: float = 1.0):
    """A headless Chromium with one tab, started and stopped here."""
    import aiohttp

    binary = chromium_path()
    if binary is None:
        raise RuntimeError("no chromium on PATH (apt-get install chromium)")
    profile = tempfile.mkdtemp(prefix="fiffdepth-chromium-")
    proc = subprocess.Popen(
        [binary, *CHROMIUM_FLAGS, "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
         f"--user-data-dir={profile}", f"--window-size={width},{height}",
         f"--force-device-scale-factor={scale}", "--hide-scrollbars", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.time() + 30
        while not (port_file.is_file() and port_file.read_text().strip()):
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("chromium did not start")
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            target = next(t for t in targets if t["type"] == "page")
            async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                await page.call("Runtime.enable")
                await page.call("Page.enable")
                await page.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                                deviceScaleFactor=scale, mobile=False)
                yield page
    finally:
        stop_process(proc, timeout=10)
        shutil.rmtree(profile, ignore_errors=True)


APP = "window.comfyAPI.app.app"


# The Vue canvas store gets the canvas a few frames after ``app.canvas`` exists (both 1.27 and 1.5x); a workflow
# loaded in between makes the frontend throw "getCanvas: canvas is null". Frontends without that store pass.
CANVAS_STORE_READY = """(() => {
    const host = [...document.querySelectorAll('body *')].find(e => e.__vue_app__);
    const pinia = host && host.__vue_app__.config.globalProperties.$pinia;
    const store = pinia && pinia._s.get('canvas');
    return !store || !!store.canvas;
})()"""


async def open_app(page: Page, url: str, timeout: float = 90.0) -> None:
    """Navigate to a ComfyUI server and wait until its frontend has its node definitions, its canvas and an empty
    graph."""
    await page.call("Page.navigate", url=url)
    await page.wait_for(f"!!(window.comfyAPI && window.comfyAPI.app && {APP}.graph && {APP}.canvas && "
                        "window.LiteGraph && Object.keys(window.LiteGraph.registered_node_types).length > 100)",
                        timeout=timeout)
    await page.wait_for(CANVAS_STORE_READY, timeout=timeout)
    await page.js(f"{APP}.graph.clear()")


async def load_workflow(page: Page, workflow: dict) -> dict:
    """Load a UI workflow as a template is loaded; returns what the frontend reports about it."""
    payload = json.dumps(workflow)
    return await page.js(f"""(async () => {{
        const app = {APP};
        const wf = {payload};
        await app.loadGraphData(wf, true, true, null,
                                {{showMissingNodesDialog: false, showMissingModelsDialog: false}});
        await new Promise(r => setTimeout(r, 300));
        const missing = wf.nodes.map(n => n.type).filter(t => !(t in LiteGraph.registered_node_types));
        const sizes = {{}};
        for (const node of app.graph.nodes) {{
            const min = node.computeSize();
            sizes[node.id] = {{size: [node.size[0], node.size[1]], min: [min[0], min[1]],
                              title: node.title, type: node.type}};
        }}
        return {{missing, sizes, count: app.graph.nodes.length}};
    }})()""")


async def graph_to_prompt(page: Page) -> dict:
    """The frontend's own ``graphToPrompt``: ``{"workflow": saved UI json, "output": API prompt}``."""
    return await page.js(f"(async () => {{ const p = await {APP}.graphToPrompt(); "
                         "return JSON.parse(JSON.stringify({workflow: p.workflow, output: p.output})); })()")


async def frontend_version(page: Page) -> str:
    """The version of the frontend the page runs (as its own ``window.__COMFYUI_FRONTEND_VERSION__`` says)."""
    return await page.js("window.__COMFYUI_FRONTEND_VERSION__ || ''")


# Console lines that come from running a newer frontend against an older server, not from a workflow: frontends
# 1.5x ask ComfyUI for /api/jobs, a route ComfyUI 0.3.64 does not have.
HOST_NOISE = re.compile(r"Jobs API|Failed to fetch jobs: 404|/api/jobs")


def console_problems(console: list[tuple[str, str]]) -> list[str]:
    """The page's errors and uncaught exceptions, less ``HOST_NOISE``."""
    return [text for kind, text in console if kind in ("error", "exception", "assert") and not HOST_NOISE.search(text)]


def install_frontend_package(dest: Path, version: str | None = None) -> tuple[str, Path]:
    """``pip install --no-deps --target dest comfyui-frontend-package[==version]`` (the newest when ``version`` is
    None) with this Python; returns (version, the package's ``static`` folder for ``--front-end-root``).

    The wheel has no dependencies and is only unpacked into ``dest``: nothing of the running environment changes.
    Raises ``RuntimeError`` with pip's last lines when the package registry cannot be reached.
    """
    spec = "comfyui-frontend-package" + (f"=={version}" if version else "")
    dest = Path(dest)
    argv = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
            "--upgrade", "--target", str(dest), spec]
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"pip could not install {spec}: {(result.stdout + result.stderr).strip()[-1500:]}")
    (dist,) = dest.glob("comfyui_frontend_package-*.dist-info")
    installed = dist.name[len("comfyui_frontend_package-"):-len(".dist-info")]
    return installed, dest / "comfyui_frontend_package" / "static"


def run(coroutine):
    return asyncio.run(coroutine)


@contextmanager
def frontend_server(front_end_root: str | None):
    """A ComfyUI server in a temporary base folder with quiet frontend settings; yields its URL. ``front_end_root``:
    a frontend package's ``static/`` folder, ``newest`` (installed from PyPI into that folder), or None (the pinned
    frontend of ComfyUI's requirements)."""
    with tempfile.TemporaryDirectory() as base:
        root = front_end_root
        if root == "newest":
            _, root = install_frontend_package(Path(base) / "frontend")
        write_quiet_settings(Path(base))
        with comfy_server(Path(base), front_end_root=root) as url:
            yield url
