"""The Comfy Registry package: exactly what a ComfyUI user needs, built the way ``comfy node pack`` builds it.

``tools/registry_package.py`` follows comfy-cli 1.23 (git-tracked files, less ``.comfyignore``, plus ``[tool.comfy]
includes`` walked from disk); where comfy-cli is installed (``COMFY_CLI``, or ``comfy`` on PATH) the slow test runs
``comfy node pack`` itself on a copy of the repository and compares the zips. Installing that zip into a real
ComfyUI and running a template is in ``test_workflows_comfyui.py``.
"""

from __future__ import annotations

import subprocess
import tomllib
import zipfile
from pathlib import Path

import pytest
from registry_package import ROOT, build, comfy_cli, comfy_node_pack, copy_repository, package_files

# What ships, by top-level entry: the node pack, the library it calls, the templates, what ComfyUI-Manager runs at
# install, the licence and README, the pyproject (the registry's metadata), and train/ (the README and every
# template's note send users to train/finetune.py to make a checkpoint).
SHIPPED = {"__init__.py", "nodes", "fiffdepth_core", "workflows", "train", "requirements.txt", "install.py",
           "pyproject.toml", "LICENSE", "README.md"}
NEVER = ("tests/", "benchmarks/", "fiffdepth_testkit/", ".ci/", "docs/", "scripts/", "tools/", "fiffdepth_webui/",
         "preload.py", "metadata.ini", ".gitignore", ".comfyignore")


def tracked(root: Path = ROOT) -> list[str]:
    out = subprocess.run(["git", "-C", str(root), "ls-files"], capture_output=True, text=True, check=True).stdout
    return out.splitlines()


@pytest.fixture(scope="module")
def files() -> list[str]:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: comfy node pack would walk the folder instead")
    return package_files()


def test_the_package_holds_what_a_comfyui_user_needs(files):
    assert {rel.split("/")[0] for rel in files} == SHIPPED
    shipped = set(files)
    every_tracked = tracked()
    needed = [rel for rel in every_tracked if rel.split("/")[0] in SHIPPED]
    assert sorted(needed) == files, "a tracked file of a shipped folder is left out"
    assert {"__init__.py", "requirements.txt", "install.py", "LICENSE", "README.md", "train/finetune.py",
            "train/configs/fiffdepth_sd2.yaml"} <= shipped
    assert {f"workflows/{p.name}" for p in (ROOT / "workflows").iterdir()} <= shipped
    assert not [rel for rel in files if rel.startswith(NEVER) or rel.endswith((".pyc", ".whl"))]
    assert not [rel for rel in every_tracked if rel.startswith(NEVER) and rel in shipped]


def test_the_package_stays_small(files):
    """Everything shipped is code, configs, six templates and their thumbnails: about 0.85 MB unpacked today.
    A large file (a wheel, a checkpoint, a screenshot folder) would pass the folder list but not this."""
    sizes = {rel: (ROOT / rel).stat().st_size for rel in files}
    assert sum(sizes.values()) < 1_500_000, sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
    assert max(sizes.values()) < 100_000, max(sizes.items(), key=lambda kv: kv[1])


def test_pyproject_packs_no_untracked_folder():
    """``[tool.comfy] includes`` walks folders from disk: a stray ``my_edit.json`` there would ship (and become a
    template). The workflows are tracked, so nothing is included that way."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["comfy"].get("includes", []) == []


@pytest.mark.slow
def test_untracked_files_never_ship(tmp_path):
    repo = copy_repository(tmp_path / "repo")
    before = package_files(repo)
    (repo / "workflows" / "my_edit.json").write_text("{}")
    (repo / "workflows" / "__pycache__").mkdir()
    (repo / "workflows" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (repo / "notes.txt").write_text("mine")
    assert package_files(repo) == before
    files = build(tmp_path / "node.zip", repo)
    with zipfile.ZipFile(tmp_path / "node.zip") as archive:
        assert sorted(archive.namelist()) == files == before


@pytest.mark.slow
@pytest.mark.skipif(not comfy_cli(), reason="comfy-cli not installed (set COMFY_CLI to its `comfy` executable)")
def test_comfy_node_pack_makes_the_same_package(tmp_path):
    repo = copy_repository(tmp_path / "repo")
    (repo / "workflows" / "my_edit.json").write_text("{}")  # untracked: must not ship
    with zipfile.ZipFile(comfy_node_pack(repo, comfy_cli())) as archive:
        theirs = sorted(name for name in archive.namelist() if not name.endswith("/"))
    assert theirs == package_files(repo)
    assert "workflows/my_edit.json" not in theirs
