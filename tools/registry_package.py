"""The Comfy Registry package of this pack, built the way ``comfy node pack`` (comfy-cli 1.23) builds it.

comfy-cli zips the git-tracked files (every file when the folder is not a git checkout), leaves out those that
match ``.comfyignore`` (gitignore patterns, read with ``pathspec``'s ``gitwildmatch``), and adds the folders of
``[tool.comfy] includes`` walked from disk, untracked files and all. This module does the same, so the tests can
check what a registry user gets without comfy-cli, and ``comfy node pack`` can be compared with it where comfy-cli
is installed. ``.comfyignore`` here lists what the package holds (everything else is left out), so new top-level
files stay out unless someone adds them on purpose.

    python tools/registry_package.py [OUT.zip]      # list the files, write the zip, print its size

Needs ``git`` and ``pathspec`` (``pip install pathspec``, in the ``test`` extra).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ignore_spec(root: Path):
    import pathspec

    path = root / ".comfyignore"
    if not path.is_file():
        return None
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    return pathspec.PathSpec.from_lines("gitwildmatch", patterns) if patterns else None


def _includes(root: Path) -> list[str]:
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    includes = project.get("tool", {}).get("comfy", {}).get("includes", [])
    return [os.path.normpath(include.lstrip("/")).replace(os.sep, "/") for include in includes]


def _tracked(root: Path) -> list[str] | None:
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return [line for line in out.splitlines() if line.strip()] or None


def package_files(root: Path = ROOT) -> list[str]:
    """The paths (relative, with ``/``) ``comfy node pack`` puts into the zip, sorted."""
    root = Path(root)
    spec, includes = _ignore_spec(root), _includes(root)

    def forced(rel: str) -> bool:
        return any(rel == inc or rel.startswith(inc + "/") for inc in includes if inc and inc != ".")

    def ignored(rel: str) -> bool:
        return bool(spec) and not forced(rel) and spec.match_file(rel)

    files: set[str] = set()
    tracked = _tracked(root)
    if tracked is not None:
        files |= {rel for rel in tracked if not ignored(rel) and (root / rel).exists()}
    else:  # comfy-cli's fallback outside git: walk everything, pruning ignored folders
        for folder, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if d != ".git" and not ignored(Path(folder, d).relative_to(root).as_posix())]
            files |= {rel for name in names if not ignored(rel := Path(folder, name).relative_to(root).as_posix())}
    for include in includes:
        target = root / include
        if target.is_file():
            if not ignored(include):
                files.add(include)
            continue
        for folder, dirs, names in os.walk(target):
            dirs[:] = [d for d in dirs if not ignored(Path(folder, d).relative_to(root).as_posix())]
            files |= {rel for name in names if not ignored(rel := Path(folder, name).relative_to(root).as_posix())}
    return sorted(files)


def build(zip_path: Path, root: Path = ROOT) -> list[str]:
    """Write the package zip (deflated, paths at the zip's root, as comfy-cli writes it); returns its file list."""
    files = package_files(root)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for rel in files:
            archive.write(root / rel, rel)
    return files


def copy_repository(dest: Path, root: Path = ROOT) -> Path:
    """A fresh git repository at ``dest`` holding ``root``'s tracked files as they are in the working tree (and
    ``.comfyignore``, committed or not): a clean checkout to pack."""
    dest.mkdir(parents=True)
    tracked = _tracked(root) or []
    for rel in {*tracked, ".comfyignore"}:
        if (root / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, dest / rel)
    env = {**os.environ, "GIT_AUTHOR_NAME": "pack", "GIT_AUTHOR_EMAIL": "pack@localhost",
           "GIT_COMMITTER_NAME": "pack", "GIT_COMMITTER_EMAIL": "pack@localhost"}
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-q", "--no-gpg-sign", "-m", "copy"]):
        subprocess.run(["git", *argv], cwd=dest, check=True, env=env, capture_output=True)
    return dest


def comfy_cli() -> str | None:
    """comfy-cli's ``comfy`` executable: ``COMFY_CLI``, else ``comfy`` on PATH."""
    return os.environ.get("COMFY_CLI") or shutil.which("comfy")


def comfy_node_pack(repo: Path, comfy: str) -> Path:
    """Run ``comfy node pack`` in ``repo`` (offline, no prompts); returns the zip it wrote."""
    result = subprocess.run([comfy, "--skip-prompt", "node", "pack"], cwd=repo, capture_output=True, text=True,
                            timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"comfy node pack failed:\n{result.stdout}{result.stderr}")
    return repo / "node.zip"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", type=Path, default=Path("node.zip"), help="the zip to write (node.zip)")
    args = parser.parse_args()
    files = build(args.out)
    for rel in files:
        print(rel)
    unpacked = sum((ROOT / rel).stat().st_size for rel in files)
    print(f"{len(files)} files, {unpacked / 1e3:.0f} kB unpacked, {args.out.stat().st_size / 1e3:.0f} kB zipped: "
          f"{args.out}")


if __name__ == "__main__":
    main()
