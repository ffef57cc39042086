"""README picture: a real WebUI's ControlNet unit with ``depth_fiffdepth`` selected and its preview.

Usage (headless Chromium on loopback; needs ``aiohttp`` in the running Python and a prepared host, see
tests/webui_host.py)::

    FORGE_PATH=... FORGE_PYTHON=... python tests/webui_screenshot.py forge docs/images/webui_forge.jpg

Starts the host with its full UI (a temporary ``--data-dir`` with the tiny checkpoint), opens txt2img's ControlNet
unit, uploads an image, picks ``depth_fiffdepth``, runs the preprocessor and saves the unit as a JPEG. Prints the
seconds the WebUI spent loading this extension's script (its own startup profile).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from frontend import browser_page
from PIL import Image
from webui_host import http_json, webui_server

UNIT = "txt2img_controlnet_ControlNet-0_"


def scene(path: Path, height: int = 384, width: int = 512) -> Path:
    """A simple synthetic room: floor and wall gradients with two boxes (something depth-like to look at)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.zeros((height, width, 3), np.float32)
    image[:] = (0.55 + 0.3 * y[..., None] / height) * np.array([0.85, 0.8, 0.7])
    floor = y > height * 0.6
    image[floor] = (0.3 + 0.5 * (y[floor, None] - height * 0.6) / (height * 0.4)) * np.array([0.6, 0.45, 0.3])
    image[int(height * .35):int(height * .8), int(width * .12):int(width * .4)] = [0.2, 0.35, 0.6]
    image[int(height * .5):int(height * .95), int(width * .55):int(width * .85)] = [0.7, 0.25, 0.2]
    Image.fromarray((image * 255).clip(0, 255).astype(np.uint8)).save(path)
    return path


async def click(page, selector: str) -> None:
    """A real mouse click (DevTools input events) on the centre of the first element matching ``selector``."""
    selector, _, index = selector.partition(" >> ")  # "css >> n": the n-th match
    x, y = await page.js(f"(() => {{ const e = document.querySelectorAll({json.dumps(selector)})[{index or 0}];"
                         " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
                         " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
    for kind in ("mousePressed", "mouseReleased"):
        await page.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
    await asyncio.sleep(0.5)


async def capture(url: str, image: Path, out: Path, module: str = "depth_fiffdepth") -> None:
    async with browser_page(1900, 2000) as page:
        await page.call("Page.navigate", url=url)
        await page.wait_for(f"!!document.querySelector('#{UNIT}input_image')", timeout=180)
        visible = f"document.querySelector('#{UNIT}controlnet_preprocessor_dropdown').offsetParent !== null"
        closed = ("Array.from(document.querySelectorAll('#txt2img_controlnet .label-wrap')).findIndex(e =>"
                  " e.textContent.trim().startsWith('ControlNet') && !e.classList.contains('open'))")
        for _ in range(6):  # open ControlNet's accordion (Forge: and unit 0's); early clicks may be lost
            if await page.js(visible):
                break
            index = max(0, await page.js(closed))
            await click(page, f"#txt2img_controlnet .label-wrap >> {index}")
            await asyncio.sleep(1.5)
        root = (await page.call("DOM.getDocument", depth=-1))["root"]["nodeId"]
        node = (await page.call("DOM.querySelector", nodeId=root,
                                selector=f"#{UNIT}input_image input[type=file]"))["nodeId"]
        await page.call("DOM.setFileInputFiles", nodeId=node, files=[str(image)])
        await asyncio.sleep(3)
        if not await page.js(f"document.querySelector('#{UNIT}controlnet_preprocessor_preview_checkbox input')"
                             ".checked"):
            await click(page, f"#{UNIT}controlnet_preprocessor_preview_checkbox input")
        await page.js(f"(() => {{ for (const l of document.querySelectorAll('#{UNIT}controlnet_type_filter_radio "
                      "label')) if (l.textContent.trim() === 'Depth') l.click(); return true; })()")
        await asyncio.sleep(1.5)
        await click(page, f"#{UNIT}controlnet_preprocessor_dropdown input")
        await page.wait_for(f"!!document.querySelector('li[aria-label={module}]')")
        await click(page, f"li[aria-label={module}]")
        await page.wait_for(f"document.querySelector('#{UNIT}controlnet_preprocessor_dropdown input').value"
                            f" === '{module}'")
        await click(page, f"#{UNIT}controlnet_trigger_preprocessor")
        await page.wait_for(f"Array.from(document.querySelectorAll('#{UNIT}generated_image img'))"
                            ".some(i => i.naturalWidth > 0 && i.offsetParent !== null)", timeout=300)
        await asyncio.sleep(2)
        unit = f"document.querySelector('#{UNIT}controlnet_preprocessor_dropdown').closest('.gradio-accordion')"
        if await page.js(f"{unit}.getBoundingClientRect().width") < 400:  # Forge: units side by side
            await page.js("(() => { const s = document.querySelector('#txt2img_settings');"  # as if the user
                          " s.style.flex = '0 0 1500px'; s.parentElement.style.gridTemplateColumns ="  # widened the
                          " '1500px 16px 1fr'; return true; })()")  # settings column with the resize handle
            await asyncio.sleep(1)
        await page.js(f"{unit}.scrollIntoView()")
        bottom = f"document.querySelector('#{UNIT}controlnet_preprocessor_dropdown').getBoundingClientRect().bottom"
        rect = await page.js(f"(() => {{ const r = {unit}.getBoundingClientRect(); return {{x: r.x + window.scrollX,"
                             f" y: r.y + window.scrollY, width: r.width, height: Math.min(r.height, {bottom} - r.y"
                             " + 120)}; })()")
        out.write_bytes(await page.screenshot(clip=rect, fmt="jpeg", quality=80))


def main(host: str, out: str) -> None:
    from fiffdepth_testkit.models import write_random_pipeline

    data_dir = Path(tempfile.mkdtemp(prefix=f"fiffdepth-{host}-ui-"))
    write_random_pipeline(data_dir / "models" / "fiffdepth" / "tiny", geometry="tiny", seed=0)
    image = scene(data_dir / "scene.png")
    with webui_server(host, data_dir, ui=True) as (url, seconds, log_path):
        _, profile = http_json(url + "/internal/profile-startup")
        ours = {k: round(v, 3) for k, v in (profile or {}).get("records", {}).items() if "fiffdepth" in k}
        print(json.dumps({"host": host, "answered_after_s": round(seconds, 1), "extension_records_s": ours}))
        asyncio.run(capture(url, image, Path(out)))
    print(f"saved {out} ({Path(out).stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
