"""ComfyUI's template browser as a user sees it: the pack's cards (title, thumbnail, what covers it) and a screenshot.

Opens the browser (Workflow -> Browse Templates) in a headless Chromium, picks this pack's category and reads each
card of the pack: its text, its thumbnail (loaded or not, drawn size) and the box of any badge the frontend lays
over the thumbnail, in thumbnail pixels. Used by the real-host tests and to take screenshots for review:

    COMFYUI_PATH=/path/to/ComfyUI python tools/template_browser.py OUT.png [--front-end-root DIR|newest]

Needs Debian's ``chromium`` and a Python with ComfyUI's requirements (aiohttp).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import frontend

# The cards, in page order, whose title is one of the pack's template names (frontends title a custom node's
# template with its file name): the card is the title's nearest ancestor holding an <img> (1.5x loads thumbnails as
# blob: URLs, so the image is found by its card, not its address). For each: its text lines, its thumbnail (loaded,
# natural and drawn size) and every text element laid over the thumbnail (the 1.5x "Node graph" badge), mapped to
# the thumbnail's own pixels.
READ_CARDS = """(() => {
    const names = %s;
    const titles = [...document.querySelectorAll('body *')].filter(e => e.children.length === 0
        && names.includes(e.textContent.trim()));
    const cards = [];
    for (const title of titles) {
        let card = title.parentElement;
        while (card && !card.querySelector('img')) card = card.parentElement;
        if (!card || cards.some(c => c.card === card)) continue;
        cards.push({card, title: title.textContent.trim()});
    }
    return cards.map(({card, title}) => {
        const img = card.querySelector('img');
        const box = img.getBoundingClientRect();
        const sx = img.naturalWidth / box.width, sy = img.naturalHeight / box.height;
        const overlays = [...card.querySelectorAll('*')].filter(e => e.children.length === 0 && e.innerText
                && e.innerText.trim()).map(e => [e, e.getBoundingClientRect()])
            .filter(([e, r]) => r.bottom > box.top && r.top < box.bottom && r.right > box.left && r.left < box.right)
            .map(([e, r]) => ({text: e.innerText.trim(), x0: (r.left - box.left) * sx, y0: (r.top - box.top) * sy,
                               x1: (r.right - box.left) * sx, y1: (r.bottom - box.top) * sy}));
        return {title, loaded: img.complete && img.naturalWidth > 0, natural: [img.naturalWidth, img.naturalHeight],
                shown: [box.width, box.height], text: card.innerText.split('\\n').map(t => t.trim()).filter(Boolean),
                overlays};
    });
})()"""

# Clicks the leaf element whose whole text is the pack's folder name (its entry in the category list).
OPEN_CATEGORY = """(() => {
    const pack = %s;
    const hits = [...document.querySelectorAll('body *')].filter(e => e.children.length === 0
        && e.textContent.trim() === pack);
    if (!hits.length) return false;
    hits[0].click();
    return true;
})()"""


async def read_browser(page: frontend.Page, pack: str, names: list[str], screenshot: Path | None = None) -> list[dict]:
    """Open the template browser on the current page, show ``pack``'s category, return the cards titled with one
    of ``names`` (in page order) once every thumbnail has loaded."""
    await page.js(f"{frontend.APP}.extensionManager.command.execute('Comfy.BrowseTemplates')")
    read = READ_CARDS % json.dumps(names)
    # Clicked again at every poll: a click while the browser is still loading its index is lost.
    await page.wait_for(f"(() => {{ if (!{OPEN_CATEGORY % json.dumps(pack)}) return false; const c = {read}; "
                        f"return c.length === {len(names)} && c.every(x => x.loaded); }})()", timeout=60, interval=1.0)
    await asyncio.sleep(1.0)  # let hover and fade-in effects settle before the screenshot
    if screenshot is not None:
        Path(screenshot).write_bytes(await page.screenshot())
    return await page.js(read)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="screenshot (PNG) of the browser showing this pack's templates")
    parser.add_argument("--front-end-root", help="a frontend package's static/ folder, or 'newest'")
    args = parser.parse_args()
    if frontend.chromium_path() is None:
        sys.exit("no chromium on PATH: apt-get install chromium")

    async def browse(url):
        async with frontend.browser_page(1600, 1000) as page:
            await frontend.open_app(page, url)
            version = await frontend.frontend_version(page)
            names = await page.js("fetch('/workflow_templates').then(r => r.json()).then(t => t.fiffdepth)")
            return version, await read_browser(page, "fiffdepth", names, args.out)

    with frontend.frontend_server(args.front_end_root) as url:
        version, cards = frontend.run(browse(url))
    print(f"frontend {version}: {len(cards)} cards; screenshot {args.out}")
    for card in cards:
        print(json.dumps(card, ensure_ascii=False))


if __name__ == "__main__":
    main()
