"""Template thumbnails (``workflows/<name>.jpg``): a real screenshot of the workflow as ComfyUI's own frontend draws
it, above a title band, under a plain strip that newer template browsers cover with a badge.

A headless ComfyUI (COMFYUI_PATH, this pack linked in, loopback only) serves the frontend; Debian's ``chromium``
runs headless with no network beyond 127.0.0.1 and loads each workflow the way the template browser does. The
Load Image / Load Video nodes show a procedural scene rendered by ``train/datasets/procedural_scene.py`` (no
third-party pictures); depth previews stay empty (no official weights exist, and random ones would mislead).

    apt-get install chromium
    COMFYUI_PATH=/path/to/ComfyUI python tools/make_thumbnails.py [name ...]

Needs a Python with ComfyUI's requirements (aiohttp, av, Pillow). The template browser shows a thumbnail in a
256 px square without cropping, so thumbnails are 512 x 512 (sharp on high-density screens).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import frontend
from comfy_server import comfy_server

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
PROJECT = WORKFLOWS.parent

SIZE = 512
BAND = 118  # the title band at the bottom
TOP = 72  # plain strip on top: newer template browsers cover the top-left corner with a badge
BACKGROUND = (32, 32, 32)
TITLES = {
    "FiffDepth 1 - Image to depth": ("Image → depth", "detailed + filtered passes · 16-bit PNG"),
    "FiffDepth 2 - SD1.5 ControlNet": ("Depth → SD 1.5 ControlNet", "FiffDepth map drives a depth ControlNet"),
    "FiffDepth 3 - SDXL ControlNet": ("Depth → SDXL ControlNet", "FiffDepth map drives an SDXL depth ControlNet"),
    "FiffDepth 4 - Video to depth": ("Video → depth frames", "stabilized over time · no flicker"),
    "FiffDepth 5 - Core loaders": ("Core loaders", "UNET + VAE loaders · LotusConditioning"),
    "FiffDepth 6 - Wan VACE video": ("Video → Wan VACE", "steady depth video guides Wan 2.1 VACE"),
}
VIEW = {"width": 2200, "height": 1500, "margin": 20}


def _procedural_render():
    path = PROJECT / "train" / "datasets" / "procedural_scene.py"
    spec = importlib.util.spec_from_file_location("_fiffdepth_procedural_scene", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # numpy only
    return module.render


def write_inputs(input_dir: Path) -> None:
    """``example.png`` and a short ``example.mp4`` (a slow pan over the same scene) for the loader previews."""
    render = _procedural_render()
    input_dir.mkdir(parents=True, exist_ok=True)
    rgb, _ = render(384, 576, index=3, seed=7)  # [3,H,W]
    pixels = (rgb.transpose(1, 2, 0) * 255).round().astype(np.uint8)  # [H,W,3]
    Image.fromarray(pixels).save(input_dir / "example.png")
    import av

    with av.open(str(input_dir / "example.mp4"), mode="w") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 448, 384, "yuv420p"
        for x in range(0, 128, 8):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels[:, x:x + 448]), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# Fits the graph (notes left out: unreadable at thumbnail size) into the canvas element, which starts right of
# the side bar and below the top bar, and returns that region in page pixels for the screenshot clip.
FIT_VIEW = """(async () => {{
    const app = {app}; const canvas = app.canvas; const graph = app.graph;
    const title = LiteGraph.NODE_TITLE_HEIGHT, margin = {margin};
    const boxes = graph.nodes.filter(n => !["Note", "MarkdownNote"].includes(n.type))
        .map(n => [n.pos[0], n.pos[1] - title, n.pos[0] + n.size[0], n.pos[1] + n.size[1]])
        .concat(graph.groups.map(g => (b => [b[0], b[1], b[0] + b[2], b[1] + b[3]])(g.boundingRect ?? g._bounding)));
    const x0 = Math.min(...boxes.map(b => b[0])) - 16, y0 = Math.min(...boxes.map(b => b[1])) - 16;
    const x1 = Math.max(...boxes.map(b => b[2])) + 16, y1 = Math.max(...boxes.map(b => b[3])) + 16;
    const rect = canvas.canvas.getBoundingClientRect();
    const w = rect.width - 2 * margin, h = rect.height - 2 * margin;
    const scale = Math.min(w / (x1 - x0), h / (y1 - y0), 1.5);
    canvas.ds.scale = scale;
    canvas.ds.offset[0] = margin / scale - x0;
    canvas.ds.offset[1] = margin / scale - y0;
    canvas.setDirty(true, true);
    await new Promise(r => setTimeout(r, 1500));
    canvas.draw(true, true);
    return {{x: rect.left + margin, y: rect.top + margin, width: (x1 - x0) * scale, height: (y1 - y0) * scale}};
}})()"""


async def screenshots(url: str, names: list[str]) -> dict[str, Image.Image]:
    shots = {}
    async with frontend.browser_page(VIEW["width"], VIEW["height"], scale=1.0) as page:
        await frontend.open_app(page, url)
        for name in names:
            workflow = json.loads((WORKFLOWS / f"{name}.json").read_text())
            report = await frontend.load_workflow(page, workflow)
            if report["missing"]:
                raise RuntimeError(f"{name}: the frontend does not know {report['missing']}")
            clip = await page.js(FIT_VIEW.format(app=frontend.APP, margin=VIEW["margin"]))
            shots[name] = Image.open(io.BytesIO(await page.screenshot(clip=clip))).convert("RGB")
    return shots


def _font(size: int, bold: bool = False):
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    for folder in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu"):
        if Path(folder, name).is_file():
            return ImageFont.truetype(str(Path(folder, name)), size)
    return ImageFont.load_default(size)


def compose(shot: Image.Image, title: str, subtitle: str) -> Image.Image:
    """512 x 512: an empty strip on top (``TOP``), the screenshot fitted below it, and the title band at the bottom.

    The strip stays plain because newer template browsers (frontend 1.5x) lay a "Node graph" badge over the
    thumbnail's top-left corner; the card's own title (the file name) sits under the thumbnail.
    """
    card = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
    draw = ImageDraw.Draw(card)
    band_top = SIZE - BAND
    draw.rectangle([0, band_top, SIZE, SIZE], fill=(24, 40, 56))
    draw.text((22, band_top + 12), "FiffDepth", font=_font(20, bold=True), fill=(120, 190, 255))
    size = 34
    while size > 18 and draw.textlength(title, font=_font(size, bold=True)) > SIZE - 44:
        size -= 1
    draw.text((22, band_top + 38 + (34 - size) // 2), title, font=_font(size, bold=True), fill=(245, 245, 245))
    draw.text((22, band_top + 82), subtitle, font=_font(18), fill=(185, 195, 205))
    room_w, room_h = SIZE - 16, band_top - TOP - 8
    scale = min(room_w / shot.width, room_h / shot.height)
    fitted = shot.resize((max(1, round(shot.width * scale)), max(1, round(shot.height * scale))),
                         Image.Resampling.LANCZOS)
    card.paste(fitted, ((SIZE - fitted.width) // 2, TOP + (room_h - fitted.height) // 2))
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="workflow names (default: every workflows/*.json)")
    args = parser.parse_args()
    names = args.names or sorted(p.stem for p in WORKFLOWS.glob("*.json"))
    if frontend.chromium_path() is None:
        sys.exit("no chromium on PATH: apt-get install chromium")
    with tempfile.TemporaryDirectory() as base:
        frontend.write_quiet_settings(Path(base))
        write_inputs(Path(base) / "input")
        with comfy_server(Path(base)) as url:
            shots = frontend.run(screenshots(url, names))
    for name in names:
        title, subtitle = TITLES.get(name, (name, ""))
        compose(shots[name], title, subtitle).save(WORKFLOWS / f"{name}.jpg", quality=90, optimize=True,
                                                    progressive=True)
        print("wrote", WORKFLOWS / f"{name}.jpg")


if __name__ == "__main__":
    main()
