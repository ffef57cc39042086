"""Recording stand-ins for the WebUI modules the extension touches (AUTOMATIC1111 + sd-webui-controlnet, Forge).

They mirror the real APIs' shapes (sd-webui-controlnet's dataclass ``Preprocessor`` with its unique-name registry,
``modules_forge``'s plain class and dict registry, A1111's ``shared``/``devices``/``lowvram``/``script_callbacks``)
and record what the extension does with them. ``install(monkeypatch, host, models_path)`` puts them in
``sys.modules``.
"""

from __future__ import annotations

import sys
import types
from argparse import Namespace
from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Optional


def a1111_registry_module():
    @dataclass
    class PreprocessorParameter:
        label: str = "EMPTY_LABEL"
        minimum: float = 0.0
        maximum: float = 1.0
        step: float = 0.01
        value: float = 0.5
        visible: bool = True

    @dataclass
    class Preprocessor:
        name: str
        _label: str = None
        tags: List[str] = field(default_factory=list)
        slider_resolution = PreprocessorParameter(label="Resolution", minimum=64, maximum=2048, value=512, step=8)
        slider_1 = PreprocessorParameter(visible=False)
        slider_2 = PreprocessorParameter(visible=False)
        slider_3 = PreprocessorParameter(visible=False)
        sorting_priority = 0
        model: Optional[object] = None
        all_processors: ClassVar[Dict[str, "Preprocessor"]] = {}
        all_processors_by_name: ClassVar[Dict[str, "Preprocessor"]] = {}

        @property
        def label(self):
            return self._label if self._label is not None else self.name

        @classmethod
        def add_supported_preprocessor(cls, p):
            assert p.label not in cls.all_processors, f"{p.label} already registered!"
            cls.all_processors[p.label] = p
            assert p.name not in cls.all_processors_by_name, f"{p.name} already registered!"
            cls.all_processors_by_name[p.name] = p

        def __hash__(self):
            return hash(self.name)

        def unload(self):  # as sd-webui-controlnet does after /controlnet/detect
            if self.model is not None:
                if hasattr(self.model, "unload_model"):
                    self.model.unload_model()
                    return True
                self.model.to("cpu")
                return True
            return False

    module = types.ModuleType("scripts.supported_preprocessor")
    module.Preprocessor, module.PreprocessorParameter = Preprocessor, PreprocessorParameter
    return module


def forge_registry_modules(preprocessor_dir: str):
    class PreprocessorParameter:
        def __init__(self, minimum=0.0, maximum=1.0, step=0.01, label="Parameter 1", value=0.5, visible=False, **kw):
            self.gradio_update_kwargs = dict(minimum=minimum, maximum=maximum, step=step, label=label, value=value,
                                             visible=visible, **kw)

    class Preprocessor:
        def __init__(self):
            self.name = "PreprocessorBase"
            self.tags = []
            self.model_filename_filters = []
            self.slider_resolution = PreprocessorParameter(label="Resolution", minimum=128, maximum=2048, value=512,
                                                           step=8, visible=True)
            self.slider_1 = PreprocessorParameter()
            self.slider_2 = PreprocessorParameter()
            self.slider_3 = PreprocessorParameter()
            self.sorting_priority = 0

    shared = types.ModuleType("modules_forge.shared")
    shared.preprocessor_dir = preprocessor_dir
    shared.supported_preprocessors = {}
    shared.add_supported_preprocessor = lambda p: shared.supported_preprocessors.__setitem__(p.name, p)
    supported = types.ModuleType("modules_forge.supported_preprocessor")
    supported.Preprocessor, supported.PreprocessorParameter = Preprocessor, PreprocessorParameter
    package = types.ModuleType("modules_forge")
    package.__path__ = []
    package.shared, package.supported_preprocessor = shared, supported
    return {"modules_forge": package, "modules_forge.shared": shared,
            "modules_forge.supported_preprocessor": supported}


class Recorder:
    def __init__(self):
        self.calls: list = []


def webui_modules(models_path: str, recorder: Recorder):
    class OptionInfo:
        def __init__(self, default=None, label="", component=None, component_args=None, onchange=None, section=None,
                     refresh=None, **kwargs):
            self.default, self.label, self.component_args, self.section = default, label, component_args, section

    class Options:
        def __init__(self):
            self.data, self.data_labels = {}, {}

        def add_option(self, key, info):
            self.data_labels[key] = info
            self.data.setdefault(key, info.default)

    shared = types.ModuleType("modules.shared")
    shared.opts, shared.OptionInfo = Options(), OptionInfo
    shared.cmd_opts = Namespace(no_half=False, lowvram=False, medvram=False, medvram_sdxl=False, use_cpu=["all"],
                                fiffdepth_checkpoint=None)
    shared.state = Namespace(interrupted=False)
    paths_internal = types.ModuleType("modules.paths_internal")
    paths_internal.models_path = models_path
    callbacks = types.ModuleType("modules.script_callbacks")
    callbacks.settings = []
    callbacks.on_ui_settings = callbacks.settings.append
    devices = types.ModuleType("modules.devices")
    devices.get_device_for = lambda task: recorder.calls.append(("get_device_for", task)) or "cpu"
    devices.torch_gc = lambda: recorder.calls.append(("torch_gc",))
    lowvram = types.ModuleType("modules.lowvram")
    lowvram.send_everything_to_cpu = lambda: recorder.calls.append(("send_everything_to_cpu",))
    gradio = types.ModuleType("gradio")  # only what the extension touches

    class Error(Exception):
        def __init__(self, message: str = "Error raised."):
            self.message = message
            super().__init__(message)

    gradio.Error, gradio.Dropdown, gradio.Radio = Error, object(), object()
    package = types.ModuleType("modules")
    package.__path__ = []
    mods = {"gradio": gradio, "modules.shared": shared, "modules.paths_internal": paths_internal,
            "modules.script_callbacks": callbacks,
            "modules.devices": devices, "modules.lowvram": lowvram}
    for name, module in mods.items():
        if name.startswith("modules."):
            setattr(package, name.split(".")[1], module)
    return {"modules": package, **mods}


def install(monkeypatch, host: str | None, models_path, recorder: Recorder | None = None) -> dict:
    """Stand-ins for ``host`` ("a1111", "forge" or None = A1111 without ControlNet) in ``sys.modules``."""
    recorder = recorder or Recorder()
    mods = webui_modules(str(models_path), recorder)
    if host == "a1111":
        scripts = types.ModuleType("scripts")
        scripts.__path__ = []
        registry = a1111_registry_module()
        scripts.supported_preprocessor = registry
        mods.update({"scripts": scripts, "scripts.supported_preprocessor": registry})
    elif host == "forge":
        mods.update(forge_registry_modules(str(models_path) + "/ControlNetPreprocessor"))
        for name in ("backend", "backend.patcher", "backend.patcher.unet"):
            module = types.ModuleType(name)
            module.__path__ = []
            mods[name] = module
    for name in [n for n in sys.modules if n == "scripts" or n.startswith(("scripts.", "modules_forge", "backend"))]:
        monkeypatch.delitem(sys.modules, name)
    for name, module in mods.items():
        monkeypatch.setitem(sys.modules, name, module)
    return mods
