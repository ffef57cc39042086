"""fiffdepth_core's shape: three wings over an I/O layer, imports pointing one way, no import circle.

Every import statement counts, including the ones inside functions (a lazy import still ties two modules together;
it only hides the circle from the interpreter until the function runs).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "fiffdepth_core"
# A module may import from its own wing and from the wings ranked below it, never above.
RANK = {"fileio": 0, "method": 1, "weights": 2, "app": 3}
PACKAGE_FILES = ("__init__.py", "__main__.py")


def module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every fiffdepth_core module ``path`` imports, resolved to a module name (``from .x import y`` counts as
    ``x.y`` when ``y`` is a module, else as ``x``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "fiffdepth_core":
                continue
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if module_path(candidate) else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "fiffdepth_core"}
    return {m for m in found if m != name}


def module_path(name: str) -> Path | None:
    base = CORE.parent.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def graph() -> dict[str, set[str]]:
    return {module_name(p): imported_modules(p) for p in CORE.rglob("*.py")}


def wing(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def test_the_core_is_three_wings_over_an_io_layer():
    top = sorted(p.name for p in CORE.iterdir() if not p.name.startswith((".", "__pycache__")))
    assert top == sorted([*RANK, *PACKAGE_FILES]), "every core module lives in a wing (or the I/O layer)"
    for name in RANK:
        doc = ast.get_docstring(ast.parse((CORE / name / "__init__.py").read_text()))
        assert doc, f"fiffdepth_core/{name}/__init__.py says in its docstring what the wing is for"


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for source, targets in edges.items():
        if wing(source) is None:
            continue  # the package's own __init__/__main__ sit above every wing
        for target in targets:
            if wing(target) is not None and RANK[wing(target)] > RANK[wing(source)]:
                bad.append(f"{source} -> {target}")
            if wing(target) is None and target != "fiffdepth_core":
                bad.append(f"{source} -> {target} (outside the wings)")
            if target == "fiffdepth_core":
                bad.append(f"{source} -> fiffdepth_core (the top package imports the wings, not the reverse)")
    return sorted(bad)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Import circles between modules (a wing's __init__ re-exporting its own modules is not a circle)."""
    found, state = [], {}

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if target.endswith(".__init__") or target == node:
                continue
            if target in RANK_PACKAGES:  # importing a wing package = importing the modules it re-exports
                continue
            if state.get(target) == 1:
                found.append(stack[stack.index(target):] + [target])
            elif state.get(target) is None:
                visit(target, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in RANK_PACKAGES and node != "fiffdepth_core" and state.get(node) is None:
            visit(node, [])
    return found


RANK_PACKAGES = {f"fiffdepth_core.{w}" for w in RANK}


def test_imports_point_down_the_wings():
    assert upward_imports(graph()) == []


def test_no_import_circle():
    assert cycles(graph()) == []


def test_modules_import_siblings_not_their_own_wing_package():
    """Inside a wing, modules import each other by module; importing the wing package would make the package's
    __init__ (which imports every module of the wing) part of a circle."""
    bad = [f"{s} -> {t}" for s, targets in graph().items() for t in targets
           if wing(s) is not None and t in RANK_PACKAGES and wing(t) == wing(s)]
    assert bad == []


@pytest.mark.parametrize("edges, expected", [
    ({"fiffdepth_core.method.a": {"fiffdepth_core.weights.b"}}, ["fiffdepth_core.method.a -> fiffdepth_core.weights.b"]),
    ({"fiffdepth_core.fileio.a": {"fiffdepth_core.app.b"}}, ["fiffdepth_core.fileio.a -> fiffdepth_core.app.b"]),
    ({"fiffdepth_core.app.a": {"fiffdepth_core.method.b", "fiffdepth_core.fileio.c"}}, []),
])
def test_the_direction_check_catches_an_upward_import(edges, expected):
    assert upward_imports(edges) == expected


def test_the_circle_check_catches_a_lazy_circle():
    """The circle the core once had (checkpoint -> text_embed -> text_encoder -> checkpoint, through imports
    inside functions) is found by the same code that checks the tree."""
    edges = {"fiffdepth_core.weights.checkpoint": {"fiffdepth_core.weights.text_embed"},
             "fiffdepth_core.weights.text_embed": {"fiffdepth_core.weights.text_encoder"},
             "fiffdepth_core.weights.text_encoder": {"fiffdepth_core.weights.checkpoint"}}
    assert cycles(edges) == [["fiffdepth_core.weights.checkpoint", "fiffdepth_core.weights.text_embed",
                              "fiffdepth_core.weights.text_encoder", "fiffdepth_core.weights.checkpoint"]]
    # the CLI loads the weights inside a function, after its argument checks: that import is seen too
    cli = CORE / "app" / "cli.py"
    assert "    from ..weights.checkpoint import load_standalone" in cli.read_text().splitlines()
    assert "fiffdepth_core.weights.checkpoint" in imported_modules(cli)
