"""fiffdepth_core imports no host, training, accelerate or test-kit module (checked in a clean process)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

FORBIDDEN = ("comfy", "comfy_api", "comfy_extras", "server", "nodes", "folder_paths", "accelerate", "train",
             "execution", "fiffdepth_testkit", "tests", "benchmarks",
             # the WebUIs: this pack's adapters, A1111/Forge/reForge modules, sd-webui-controlnet's
             "fiffdepth_webui", "modules", "modules_forge", "backend", "ldm_patched", "lib_controlnet", "scripts",
             "gradio")
# Imported inside the functions that need them (docs/architecture.md lists them): importing the core loads none.
LAZY = ("diffusers", "transformers", "safetensors", "PIL", "cv2", "OpenEXR", "av", "psutil")
CORE = Path(__file__).resolve().parents[1] / "fiffdepth_core"


def absolute_imports(path: Path) -> list[str]:
    """The modules a file's import statements name (absolute imports, lazy ones inside functions included)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_no_forbidden_import_statements():
    offenders = [f"{path.name}: {n}" for path in CORE.rglob("*.py") for n in absolute_imports(path)
                 if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_importing_every_core_module_loads_no_host_module():
    modules = sorted(".".join(p.relative_to(CORE).with_suffix("").parts) for p in CORE.rglob("*.py")
                     if p.stem not in ("__init__", "__main__"))
    code = ("import sys, importlib\n"
            f"for m in {modules!r}: importlib.import_module('fiffdepth_core.' + m)\n"
            f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
            "print(bad); sys.exit(1 if bad else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=CORE.parent, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_importing_every_core_module_loads_no_optional_package():
    """torch and numpy are the core's only module-level dependencies; everything else waits for its function."""
    modules = sorted(".".join(p.relative_to(CORE).with_suffix("").parts) for p in CORE.rglob("*.py")
                     if p.stem not in ("__init__", "__main__"))
    code = ("import sys, importlib\n"
            "import fiffdepth_core\n"
            f"for m in {modules!r}: importlib.import_module('fiffdepth_core.' + m)\n"
            f"loaded = sorted({{m.split('.')[0] for m in sys.modules}} & set({LAZY!r}))\n"
            "print(loaded); sys.exit(1 if loaded else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=CORE.parent, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_webui_layout_and_imports():
    """The WebUI adapters: one entry file in scripts/ (no scripts/__init__.py: sd-webui-controlnet relies on
    `scripts` being a namespace shared by all extensions), a uniquely named package that never reaches the
    ComfyUI side (`nodes`, which Forge would resolve to whatever `nodes` comes first on its sys.path)."""
    root = CORE.parent
    assert not (root / "scripts" / "__init__.py").exists()
    assert [p.name for p in (root / "scripts").glob("*.py")] == ["fiffdepth_webui.py"]
    assert not (root / "webui").exists() and not (root / "webui.py").exists()
    offenders = [f"{path.name}: {n}" for path in (root / "fiffdepth_webui").rglob("*.py")
                 for n in absolute_imports(path) if n.split(".")[0] in ("nodes", "comfy", "train")]
    assert offenders == []


TRAIN = CORE.parent / "train"


def test_training_imports_nothing_from_the_test_kit():
    """The trainer builds its own random models (train/random_models.py); the test kit reuses them, never the
    other way round. Checked in the source (lazy imports included) and in a clean process importing every module."""
    offenders = [f"{path.relative_to(TRAIN)}: {n}" for path in TRAIN.rglob("*.py") for n in absolute_imports(path)
                 if n.split(".")[0] in ("fiffdepth_testkit", "tests", "benchmarks")]
    assert offenders == []
    modules = sorted("train." + ".".join(p.relative_to(TRAIN).with_suffix("").parts) for p in TRAIN.rglob("*.py")
                     if p.stem not in ("__init__", "__main__", "script_root"))
    code = ("import sys, importlib\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('fiffdepth_testkit', 'tests', 'benchmarks'))\n"
            "print(bad); sys.exit(1 if bad else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=CORE.parent,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
