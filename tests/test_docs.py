"""The documentation against the tree it describes: the layout and module map of docs/architecture.md, the links
of every page, the README's shape, and the commands it shows (with the environment they need).

The CLI synopsis in docs/cli.md has its own test against the parser; figures are checked by the benchmark commands
that produce them (benchmarks/README.md), not here.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
PAGES = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MAPPED = ("fiffdepth_core", "nodes", "fiffdepth_webui", "train")  # every module of these has a row in the map
MAX_LINES = 500
SIZED = ("fiffdepth_core", "nodes", "fiffdepth_webui", "train", "benchmarks", "tools", "scripts",
         "fiffdepth_testkit")


def section(text: str, heading: str) -> str:
    """The text under a ``## heading`` up to the next heading of the same level."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"docs/architecture.md has no '## {heading}' section"
    return match.group(1)


def tracked_top_level() -> set[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"not a git checkout ({err}): the layout is checked against the tracked files")
    return {path.split("/")[0] for path in out.split("\0") if path}


def layout_entries(text: str) -> set[str]:
    block = re.search(r"```\n(.*?)```", section(text, "Layout"), flags=re.S).group(1)
    names = set()
    for line in block.splitlines():
        if line and not line.startswith(" "):  # continuation lines are indented
            head = re.split(r" {2,}", line.strip())[0]
            names |= {name.strip().rstrip("/") for name in head.split(",")}
    return names


def mapped_modules(text: str) -> set[str]:
    """Paths (from the repository root) the module map names: table rows under a ``### `dir/``` heading, plus
    full paths written in its prose."""
    body = section(text, "Module map")
    listed = {path for path in re.findall(r"`([\w/]+\.py)`", body) if "/" in path and path.split("/")[0] in MAPPED}
    for match in re.finditer(r"^### `([\w/]+)/`.*?\n(.*?)(?=^### |\Z)", body, flags=re.M | re.S):
        folder, table = match.groups()
        for row in re.findall(r"^\| (.*?) \|", table, flags=re.M):
            listed |= {f"{folder}/{name}" for name in re.findall(r"`([\w/]+\.py)`", row)}
    return {path for path in listed if not path.endswith("__init__.py")}  # packages' public names, not modules


def existing_modules() -> set[str]:
    return {p.relative_to(ROOT).as_posix() for top in MAPPED for p in (ROOT / top).rglob("*.py")
            if p.name != "__init__.py" and "__pycache__" not in p.parts}


def test_layout_lists_every_top_level_entry_and_nothing_else():
    listed = layout_entries(ARCHITECTURE.read_text())
    tracked = tracked_top_level()
    assert sorted(tracked - listed) == [], "tracked at the top level but not in docs/architecture.md's layout"
    assert sorted(listed - tracked) == [], "in docs/architecture.md's layout but not in the repository"


def test_module_map_matches_the_tree():
    listed, existing = mapped_modules(ARCHITECTURE.read_text()), existing_modules()
    assert sorted(existing - listed) == [], "modules missing from docs/architecture.md's module map"
    assert sorted(listed - existing) == [], "docs/architecture.md's module map names modules that do not exist"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (not - and _), spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def test_every_relative_link_and_anchor_resolves():
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # an address, not a file of the repository
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


def test_code_fences_are_closed():
    unbalanced = [str(page.relative_to(ROOT)) for page in PAGES
                  if sum(line.startswith("```") for line in page.read_text().splitlines()) % 2]
    assert unbalanced == []


def test_readme_first_screen_gets_every_user_going():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) < 250
    first = "\n".join(lines[:60])
    for route, command in [("ComfyUI", "git clone"), ("WebUI", "Install from URL"),
                           ("Command line", ".venv/bin/python -m fiffdepth_core predict"),
                           ("Training", "bash scripts/quickstart.sh"), ("Tests", ".venv/bin/python -m pytest")]:
        assert route in first and command in first, f"the README's first 60 lines lack {route}: {command}"
    assert "FIFFDEPTH_TORCH" in first


def commands(text: str) -> list[str]:
    """The lines of fenced code blocks and the first cells of tables (where the pages put commands)."""
    lines = [line for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S) for line in block.splitlines()]
    return lines + re.findall(r"^\| (`.*?`) \|", text, flags=re.M)


def test_commands_name_the_environment_they_need():
    """A bare `python` has no torch unless the venv is active: commands show `.venv/bin/python` (or a host's own
    Python), never `python -m pytest`, `python -m fiffdepth_core` or `python train/...` alone."""
    bare = re.compile(r"(?<![\w/.-])python3? (-m (pytest|fiffdepth_core)|(train|benchmarks)/)")
    offenders = [f"{page.relative_to(ROOT)}: {line.strip()}"
                 for page in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
                 for line in commands(page.read_text()) if bare.search(line)]
    assert offenders == []


def test_code_files_stay_under_the_size_limit():
    long = [f"{p.relative_to(ROOT)}: {n} lines" for top in SIZED for p in sorted((ROOT / top).rglob("*.py"))
            if "__pycache__" not in p.parts and (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert long == []
