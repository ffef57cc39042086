"""nodes/compat.py against stand-ins for the newer ComfyUI API (0.38: CoreModelPatcher, assign=, device context,
patcher free memory, search_aliases) and the older one (0.3.48-0.3.64: none of them). Offline: the module is loaded
by file path with stand-in ``comfy`` modules in ``sys.modules``; the real-host version is in test_comfyui_host.py."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
from dataclasses import dataclass

import pytest
from comfy_host import PACK_ROOT


def fake_comfy(monkeypatch, newer: bool) -> dict:
    """Stand-in ``comfy.model_patcher`` / ``comfy.model_management``; returns a log of what was called."""
    log = {"contexts": [], "free_asked": [], "loads": []}

    class ModelPatcher:
        def __init__(self, model, load_device=None, offload_device=None):
            self.model = model

    patcher_module = types.ModuleType("comfy.model_patcher")
    patcher_module.ModelPatcher = ModelPatcher
    mm = types.ModuleType("comfy.model_management")
    mm.get_free_memory = lambda device: 111
    mm.load_models_gpu = lambda models, memory_required=0, **kw: log["loads"].append((models, memory_required, kw))
    if newer:
        class ModelPatcherDynamic(ModelPatcher):
            def is_dynamic(self):
                return True

            def get_free_memory(self, device):
                log["free_asked"].append(device)
                return 222

        patcher_module.CoreModelPatcher = ModelPatcherDynamic

        @contextlib.contextmanager
        def cuda_device_context(device):
            log["contexts"].append(("enter", device))
            yield
            log["contexts"].append(("exit", device))

        mm.cuda_device_context = cuda_device_context
    comfy = types.ModuleType("comfy")
    comfy.__path__ = []
    comfy.model_patcher, comfy.model_management = patcher_module, mm
    for name, module in (("comfy", comfy), ("comfy.model_patcher", patcher_module), ("comfy.model_management", mm)):
        monkeypatch.setitem(sys.modules, name, module)
    return log


def load_compat():
    spec = importlib.util.spec_from_file_location("_fiffdepth_compat_probe", PACK_ROOT / "nodes" / "compat.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Model:
    def __init__(self, takes_assign: bool):
        self.calls = []
        if takes_assign:
            self.load_model_weights = lambda sd, prefix="", assign=False: self.calls.append((prefix, assign))
        else:
            self.load_model_weights = lambda sd, prefix="": self.calls.append((prefix,))


def test_newer_comfyui_paths_are_used(monkeypatch):
    log = fake_comfy(monkeypatch, newer=True)
    compat = load_compat()
    cls = compat.patcher_class()
    assert cls.__name__ == "ModelPatcherDynamic"
    model = Model(takes_assign=True)
    patcher = cls(model)
    compat.load_model_weights(model, {}, patcher)
    assert model.calls == [("", True)]  # as core: assign=patcher.is_dynamic()
    with compat.device_context("cuda:1"):
        log["contexts"].append("inside")
    assert log["contexts"] == [("enter", "cuda:1"), "inside", ("exit", "cuda:1")]
    assert compat.free_memory(patcher, "cuda:1") == 222 and log["free_asked"] == ["cuda:1"]
    vae = types.SimpleNamespace(patcher=patcher, disable_offload=True)
    compat.load_vae(vae, 1234)
    assert log["loads"] == [([patcher], 1234, {"force_full_load": True})]


def test_older_comfyui_falls_back(monkeypatch):
    log = fake_comfy(monkeypatch, newer=False)
    compat = load_compat()
    cls = compat.patcher_class()
    assert cls.__name__ == "ModelPatcher"
    model = Model(takes_assign=False)
    patcher = cls(model)
    compat.load_model_weights(model, {}, patcher)
    assert model.calls == [("",)]
    with compat.device_context("cpu"):
        pass
    assert compat.free_memory(patcher, "cpu") == 111
    compat.load_vae(types.SimpleNamespace(patcher=patcher), 99)
    assert log["loads"] == [([patcher], 99, {})] and log["contexts"] == []


def test_search_aliases_only_where_the_schema_takes_them(monkeypatch):
    fake_comfy(monkeypatch, newer=False)
    compat = load_compat()

    @dataclass
    class OldSchema:  # 0.3.64's fields
        node_id: str
        display_name: str = None
        category: str = "sd"

    @dataclass
    class NewSchema(OldSchema):
        search_aliases: list = None

    assert compat.schema_extras(OldSchema, ["depth"]) == {}
    assert compat.schema_extras(NewSchema, ["depth"]) == {"search_aliases": ["depth"]}
    OldSchema(node_id="x", **compat.schema_extras(OldSchema, ["depth"]))  # would raise with the aliases


QUERIES = ("depth", "controlnet depth", "fiffdepth")


def findable(info: dict, aliases: list[str], query: str) -> bool:
    """The frontend's search, simplified: every word of the query in the name, category or one alias."""
    fields = [info["display_name"], info["name"], info["category"] or "", *aliases]
    return any(all(word in field.lower() for word in query.split()) for field in fields)


def test_pack_nodes_are_filed_with_core_depth_and_findable():
    from pack_schemas import pack_object_info

    infos = pack_object_info()
    for node_id, info in infos.items():
        assert info["category"].startswith("image/geometry estimation"), node_id
        aliases = info.get("search_aliases", [])
        assert "fiffdepth" in aliases and "depth" in aliases, node_id
    estimate = infos["FiffDepthEstimate"]
    for query in QUERIES:
        assert findable(estimate, estimate["search_aliases"], query), query
    assert not findable(estimate, [], "controlnet depth")  # the aliases are what makes it findable
