"""Packaging: the metadata ComfyUI's registry reads, the node-path requirements, and install.py."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_install():
    spec = importlib.util.spec_from_file_location("fiffdepth_install", ROOT / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pyproject_declares_the_registry_block_and_installs_only_the_core():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["comfy"]["requires-comfyui"] == ">=0.3.48"  # the V3 node API
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert include == ["fiffdepth_core", "fiffdepth_core.*"]  # never a top-level nodes/train/tests
    from setuptools import find_packages

    packages = find_packages(str(ROOT), include=include)
    assert "fiffdepth_core" in packages and {"fiffdepth_core.method", "fiffdepth_core.weights"} <= set(packages)
    assert all(p == "fiffdepth_core" or p.startswith("fiffdepth_core.") for p in packages)
    assert "ComfyUI" not in project["project"]["name"]
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"]["file"] == ["requirements.txt"]
    for extra in ("standalone", "train", "test"):
        assert extra in project["project"]["optional-dependencies"]


def test_node_requirements_leave_torch_to_the_host():
    names = [name.lower() for name, _ in load_install().requirements()]
    assert names and not {"torch", "torchvision", "diffusers", "accelerate"} & set(names)


def test_install_is_idempotent_and_can_only_report(monkeypatch, tmp_path, capsys):
    install = load_install()
    calls = []
    monkeypatch.setattr(install.subprocess, "call", lambda argv: calls.append(argv) or 0)
    assert install.main() == 0 and calls == []  # everything present: nothing to do
    fake = tmp_path / "requirements.txt"
    fake.write_text("numpy>=1.0\nnot-a-real-package-fiffdepth>=1.0  # comment\n")
    monkeypatch.setattr(install, "REQUIREMENTS", fake)
    monkeypatch.setenv("FIFFDEPTH_NO_INSTALL", "1")
    assert install.main() == 1 and calls == []
    assert "not-a-real-package-fiffdepth>=1.0" in capsys.readouterr().out
    monkeypatch.delenv("FIFFDEPTH_NO_INSTALL")
    assert install.main() == 0
    assert calls == [[install.sys.executable, "-m", "pip", "install", "not-a-real-package-fiffdepth>=1.0"]]


def test_too_old_versions_count_as_missing(monkeypatch, tmp_path):
    install = load_install()
    assert install.satisfied("numpy", "numpy>=1.0") and not install.satisfied("numpy", "numpy>=999.0")


def test_install_adds_pinned_diffusers_only_inside_a_webui_without_it(monkeypatch, tmp_path):
    install = load_install()
    calls = []
    monkeypatch.setattr(install.subprocess, "call", lambda argv: calls.append(argv) or 0)
    present = install.satisfied
    monkeypatch.setattr(install, "satisfied", lambda name, line: name != "diffusers" and present(name, line))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.chdir(tmp_path)
    assert install.main() == 0 and calls == []  # not a WebUI (e.g. ComfyUI): diffusers is not the pack's business
    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / "paths_internal.py").write_text("")
    (tmp_path / "webui.py").write_text("")
    assert install.main() == 0
    assert calls == [[install.sys.executable, "-m", "pip", "install", "diffusers==0.31.0",
                      "huggingface_hub>=0.23.2,<1.0"]]
    assert not any("torch" in arg for arg in calls[0])
    monkeypatch.setattr(install, "satisfied", present)  # diffusers there (Forge, or A1111 after the first run)
    calls.clear()
    assert install.main() == 0 and calls == []


def test_the_library_holds_no_test_factories():
    """Random-weight model builders and tokenizer writers live in fiffdepth_testkit/, which is never installed."""
    import ast

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "fiffdepth_testkit" not in project["tool"]["setuptools"]["packages"]
    for path in (ROOT / "fiffdepth_core").glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        seeds = [node for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr == "manual_seed"]
        assert not {n for n in names if n.startswith(("random_", "write_random", "write_minimal"))}, path.name
        assert not seeds, f"{path.name} seeds a random generator: model factories belong in fiffdepth_testkit/"
