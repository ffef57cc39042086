"""Loads each bundled workflow in ComfyUI's own frontend and writes what that frontend's Export writes.

The exports under ``tests/data/frontend_exports/<frontend version>/`` are the test data that keeps the workflow
checks honest about what real frontends save (``tests/test_workflows.py``): re-run this after changing a workflow,
once with the pinned frontend and once with the newest one.

    COMFYUI_PATH=/path/to/ComfyUI python tools/export_workflows.py                       # the frontend ComfyUI pins
    COMFYUI_PATH=/path/to/ComfyUI python tools/export_workflows.py --front-end-root newest  # the newest on the registry
    COMFYUI_PATH=/path/to/ComfyUI python tools/export_workflows.py --front-end-root DIR     # a frontend's static/

Needs Debian's ``chromium`` and a Python with ComfyUI's requirements (aiohttp); ``newest`` also needs pip and the
package registry (the package goes into a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import frontend
from comfy_server import PACK_ROOT

WORKFLOWS = PACK_ROOT / "workflows"
EXPORTS = PACK_ROOT / "tests" / "data" / "frontend_exports"


async def export_all(url: str, workflows: dict[str, dict]) -> tuple[str, dict[str, dict], list[str]]:
    """(frontend version, {name: exported workflow}, console problems while loading them)."""
    exported = {}
    async with frontend.browser_page() as page:
        await frontend.open_app(page, url)
        version = await frontend.frontend_version(page)
        page.console.clear()
        for name, workflow in workflows.items():
            report = await frontend.load_workflow(page, workflow)
            if report["missing"]:
                raise RuntimeError(f"{name}: the frontend does not know {report['missing']}")
            saved = (await frontend.graph_to_prompt(page))["workflow"]
            saved.setdefault("extra", {})["ds"] = workflow["extra"]["ds"]  # Export adds the view; keep the file's
            exported[name] = saved
        return version, exported, frontend.console_problems(page.console)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--front-end-root", help="a frontend package's static/ folder, or 'newest'")
    parser.add_argument("--out", type=Path, default=EXPORTS, help="folder for <version>/<name>.json")
    args = parser.parse_args()
    if frontend.chromium_path() is None:
        sys.exit("no chromium on PATH: apt-get install chromium")
    workflows = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(WORKFLOWS.glob("*.json"))}
    with frontend.frontend_server(args.front_end_root) as url:
        version, exported, problems = frontend.run(export_all(url, workflows))
    folder = args.out / version
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.json"):
        old.unlink()
    for name, workflow in exported.items():
        (folder / f"{name}.json").write_text(json.dumps(workflow, indent=2, ensure_ascii=False) + "\n",
                                             encoding="utf-8")
    print(f"frontend {version}: wrote {len(exported)} exports to {folder}")
    for problem in problems:
        print("console:", problem[:300])


if __name__ == "__main__":
    main()
