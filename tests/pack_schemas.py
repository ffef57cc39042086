"""This pack's node definitions, in ``/object_info`` form, from the real ``define_schema()`` without ComfyUI.

The pack's ``nodes`` package is imported under a private name with small recording stand-ins for
``comfy_api.latest`` (``io``, ``ui``, ``ComfyExtension``), ``comfy.*`` and ``folder_paths`` placed in
``sys.modules`` for that import only; everything is removed again afterwards and any real ComfyUI modules already
imported are put back. The recorded schemas are converted the way ComfyUI's V3 API presents them to the frontend
(required/optional dicts, ``input_order``, ``output``/``output_name``), so workflows can be checked against them
with the same code as against a live server's ``/object_info`` (``test_workflows.py`` compares the two when
COMFYUI_PATH is set).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import re
import sys
import types
from contextlib import contextmanager
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]
PROBE = "_fiffdepth_schema_probe"
FAKED = ("comfy", "comfy_api", "folder_paths")


def _io_type(class_name: str) -> str:
    """``ControlNet`` -> ``CONTROL_NET``: the type names ComfyUI's ``io`` classes carry."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", class_name).upper()


class Record:
    """Whatever a stand-in was called with."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class InputRecord(Record):
    def __init__(self, io_type: str, id: str, **kwargs):
        super().__init__(id, **kwargs)
        self.io_type, self.id = io_type, id


class OutputRecord(Record):
    def __init__(self, io_type: str, id: str | None = None, **kwargs):
        super().__init__(id, **kwargs)
        self.io_type, self.id = io_type, id


class _IOType:
    def __init__(self, class_name: str):
        self.io_type = _io_type(class_name)

    def Input(self, id, **kwargs):  # noqa: N802 (ComfyUI's spelling)
        return InputRecord(self.io_type, id, **kwargs)

    def Output(self, id=None, **kwargs):  # noqa: N802
        return OutputRecord(self.io_type, id, **kwargs)


class _Anything:
    """Attribute access and calls on it return more of it (enum members, hidden inputs, UI helpers)."""

    def __init__(self, name: str = "stand-in"):
        self._name = name

    def __getattr__(self, item):
        return _Anything(f"{self._name}.{item}")

    def __call__(self, *args, **kwargs):
        return Record(*args, **kwargs)


def _io_module() -> types.ModuleType:
    io = types.ModuleType("comfy_api.latest.io")

    class ComfyNode:
        pass

    io.ComfyNode = ComfyNode
    io.Schema = type("Schema", (Record,), {})
    io.NodeOutput = type("NodeOutput", (Record,), {})
    for name in ("FolderType", "Hidden", "UploadType", "NumberDisplay"):
        setattr(io, name, _Anything(name))

    def __getattr__(name):  # io.Image, io.Model, io.ControlNet, ...
        if name[:1].isupper():
            return _IOType(name)
        raise AttributeError(name)

    io.__getattr__ = __getattr__
    return io


def _auto_module(name: str) -> types.ModuleType:
    """A module whose unknown attributes are fresh classes (usable as base classes) or submodules."""
    module = types.ModuleType(name)
    module.__path__ = []
    made: dict[str, type] = {}

    def __getattr__(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return made.setdefault(attr, type(attr, (), {"__getattr__": lambda self, item: _Anything(item)}))

    module.__getattr__ = __getattr__
    return module


def _folder_paths() -> types.ModuleType:
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(PACK_ROOT / ".no-such-models-dir")
    fp.folder_names_and_paths = {}

    def add_model_folder_path(name, path, is_default=False):
        fp.folder_names_and_paths.setdefault(name, ([], set()))[0].append(path)

    fp.add_model_folder_path = add_model_folder_path
    fp.get_folder_paths = lambda name: list(fp.folder_names_and_paths.get(name, ([], set()))[0])
    fp.get_filename_list = lambda name: []
    fp.get_output_directory = lambda: str(PACK_ROOT / ".no-such-output-dir")
    return fp


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self):
        self.io = _io_module()

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in FAKED:
            return importlib.util.spec_from_loader(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        name = spec.name
        if name == "folder_paths":
            return _folder_paths()
        if name == "comfy_api.latest":
            latest = types.ModuleType(name)
            latest.__path__ = []
            latest.io = self.io
            latest.ui = _Anything("ui")
            latest.ComfyExtension = type("ComfyExtension", (), {})
            return latest
        if name == "comfy_api.latest.io":
            return self.io
        return _auto_module(name)

    def exec_module(self, module):
        pass


def _owned(name: str) -> bool:
    return name.split(".")[0] in FAKED + (PROBE,)


@contextmanager
def stand_ins():
    """Recording stand-ins for ComfyUI's modules, present only inside the ``with`` block."""
    saved = {name: module for name, module in sys.modules.items() if _owned(name)}
    for name in saved:
        del sys.modules[name]
    finder = _StandInFinder()
    sys.meta_path.insert(0, finder)
    try:
        yield finder
    finally:
        sys.meta_path.remove(finder)
        for name in [name for name in sys.modules if _owned(name)]:
            del sys.modules[name]
        sys.modules.update(saved)


def _v1_spec(record: InputRecord) -> list:
    options = {k: v for k, v in record.kwargs.items() if k not in ("optional", "options")}
    if record.io_type == "COMBO":
        options["options"] = list(record.kwargs.get("options", []))
    return [record.io_type, options]


def schema_to_info(schema: Record) -> dict:
    """A recorded ``io.Schema`` in ``/object_info`` form (as ComfyUI's V3 API converts it for the frontend)."""
    kw = schema.kwargs
    required, optional = {}, {}
    for record in kw.get("inputs", []):
        (optional if record.kwargs.get("optional") else required)[record.id] = _v1_spec(record)
    outputs = kw.get("outputs", [])
    return {
        "name": kw["node_id"],
        "display_name": kw.get("display_name", kw["node_id"]),
        "category": kw.get("category"),
        "description": kw.get("description", ""),
        "input": {"required": required, **({"optional": optional} if optional else {})},
        "input_order": {"required": list(required), **({"optional": list(optional)} if optional else {})},
        "output": [o.io_type for o in outputs],
        "output_name": [o.kwargs.get("display_name") or o.id or o.io_type for o in outputs],
        "output_node": bool(kw.get("is_output_node", False)),
        **({"search_aliases": list(kw["search_aliases"])} if "search_aliases" in kw else {}),
    }


def pack_object_info() -> dict[str, dict]:
    """``{node id: definition}`` for every node the pack registers (its ``NODES`` list)."""
    with stand_ins():
        spec = importlib.util.spec_from_file_location(PROBE, PACK_ROOT / "__init__.py",
                                                      submodule_search_locations=[str(PACK_ROOT)])
        package = importlib.util.module_from_spec(spec)
        sys.modules[PROBE] = package
        spec.loader.exec_module(package)  # `import comfy` succeeds here, so it imports .nodes as in ComfyUI
        nodes = sys.modules[f"{PROBE}.nodes"]
        infos = {}
        for node in nodes.NODES:
            info = schema_to_info(node.define_schema())
            infos[info["name"]] = info
        return infos
