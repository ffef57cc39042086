"""Registration: the two preprocessors in the running WebUI's ControlNet registry, and the settings section.

``register()`` is all ``scripts/fiffdepth_webui.py`` calls. It never raises: a host without ControlNet gets one
log line and nothing registered.
"""

from __future__ import annotations

import importlib
import logging

from fiffdepth_core.method import FAMILY_CHOICES
from fiffdepth_core.weights import DEFAULT_ID, CheckpointError, DownloadError

from .checkpoints import FIRST_FOUND, NoCheckpointError, menu
from .estimator import PRECISIONS, PREPROCESSORS, Estimator
from .hosts import OPTION_CHECKPOINT, OPTION_FAMILY, OPTION_PRECISION, POLICIES, detect_host
from .images import RESOLUTION_DEFAULT, RESOLUTION_MAX, RESOLUTION_MIN

log = logging.getLogger("fiffdepth")

TAG = "Depth"
SORTING_PRIORITY = 90  # among the depth preprocessors, below the hosts' own defaults (100)
SLIDER = dict(label="Resolution", minimum=RESOLUTION_MIN, maximum=RESOLUTION_MAX, value=RESOLUTION_DEFAULT, step=8,
              visible=True)
USER_ERRORS = (NoCheckpointError, CheckpointError, DownloadError, ValueError, TypeError, InterruptedError)


def user_error_class():
    """The exception a preprocessor raises for a user's mistake: a ``gradio.Error`` (the UI shows its message in a
    box) that is also a FastAPI ``HTTPException`` (the API answers 422 with the message as ``detail``, and the
    WebUI logs no traceback for it)."""
    bases = []
    for module, name in (("gradio", "Error"), ("fastapi", "HTTPException")):
        try:
            bases.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass

    class FiffDepthError(*(bases or [RuntimeError])):
        def __init__(self, message: str):
            Exception.__init__(self, message)
            self.message = self.detail = message
            self.status_code, self.headers = 422, None
            self.duration, self.visible = None, True  # gradio: keep the box open until the user closes it

        def __str__(self) -> str:
            return self.message

        def __repr__(self) -> str:
            return f"FiffDepthError({self.message!r})"

    return FiffDepthError


def run(estimator: Estimator, error_class, input_image, resolution, name: str):
    try:
        return estimator.hint(input_image, resolution, name)
    except USER_ERRORS as err:
        log.error("%s", err)
        raise error_class(str(err)) from err


def forge_preprocessor(base_module, estimator: Estimator, error_class, name: str):
    """A ``modules_forge.supported_preprocessor.Preprocessor`` (Forge and reForge)."""
    Parameter = base_module.PreprocessorParameter

    class FiffDepthPreprocessor(base_module.Preprocessor):
        def __init__(self):
            super().__init__()
            self.name = name
            self.tags = [TAG]
            self.model_filename_filters = ["depth"]
            self.slider_resolution = Parameter(**SLIDER)
            self.slider_1 = Parameter(visible=False)
            self.slider_2 = Parameter(visible=False)
            self.slider_3 = Parameter(visible=False)
            self.sorting_priority = SORTING_PRIORITY

        def __call__(self, input_image, resolution, slider_1=None, slider_2=None, slider_3=None, input_mask=None,
                     **kwargs):
            return run(estimator, error_class, input_image, resolution, self.name)

    return FiffDepthPreprocessor()


class Offloader:
    """What sd-webui-controlnet's ``Preprocessor.unload()`` calls: gives memory back, keeps the model cached."""

    def __init__(self, estimator: Estimator):
        self.estimator = estimator

    def unload_model(self):
        self.estimator.offload()


def a1111_preprocessor(base_module, estimator: Estimator, error_class, name: str):
    """An sd-webui-controlnet ``scripts.supported_preprocessor.Preprocessor``."""
    Parameter = base_module.PreprocessorParameter

    class FiffDepthPreprocessor(base_module.Preprocessor):
        def __init__(self):
            super().__init__(name=name)
            self.tags = [TAG]
            self.slider_resolution = Parameter(**SLIDER)
            self.slider_1 = Parameter(visible=False)
            self.slider_2 = Parameter(visible=False)
            self.slider_3 = Parameter(visible=False)
            self.sorting_priority = SORTING_PRIORITY
            self.model = Offloader(estimator)

        def __call__(self, input_image, resolution, slider_1=None, slider_2=None, slider_3=None, input_mask=None,
                     **kwargs):
            return run(estimator, error_class, input_image, resolution, self.name)

    return FiffDepthPreprocessor()


def add_settings(policy) -> None:
    """Settings -> FiffDepth: the checkpoint (default: the first found, else the catalogue's default model) and the
    precision. Lists what is on disk and the catalogue: no network request."""
    import gradio as gr
    from modules import script_callbacks, shared

    def choices():
        return {"choices": menu(policy.roots())}

    def on_settings():
        section = ("fiffdepth", "FiffDepth")
        shared.opts.add_option(OPTION_CHECKPOINT, shared.OptionInfo(
            FIRST_FOUND, f"Checkpoint (models/fiffdepth; {FIRST_FOUND}: the first installed, else {DEFAULT_ID}, "
            "downloaded on first use; entries marked '(download ...)' download on first use; "
            "--fiffdepth-checkpoint overrides)", gr.Dropdown, choices, refresh=lambda: None, section=section))
        shared.opts.add_option(OPTION_PRECISION, shared.OptionInfo(
            "auto", "Precision (auto: the WebUI's choice; --no-half forces fp32)", gr.Radio,
            {"choices": list(PRECISIONS)}, section=section))
        shared.opts.add_option(OPTION_FAMILY, shared.OptionInfo(
            "auto", "Model family (auto: detected from the checkpoint; Lotus-D, GenPercept and Marigold-E2E-FT "
            "checkpoints run through the same preprocessors, the filtered pass is FiffDepth's only)", gr.Dropdown,
            {"choices": list(FAMILY_CHOICES)}, section=section))

    on_settings()  # now as well, so the options exist (and the API can set them) without the UI (--nowebui)
    script_callbacks.on_ui_settings(on_settings)


def _replacing(registry):
    """sd-webui-controlnet's ``add_supported_preprocessor`` refuses a name twice; a UI reload re-runs this script."""

    def add(preprocessor):
        registry.all_processors.pop(preprocessor.label, None)
        registry.all_processors_by_name.pop(preprocessor.name, None)
        registry.add_supported_preprocessor(preprocessor)

    return add


def console_logging() -> None:
    """Show this extension's INFO lines (registration, loading, download progress) in the WebUI console, as other
    extensions print theirs. Only when nothing is configured: with a root handler (``--loglevel``), that one shows
    them."""
    logger = logging.getLogger("fiffdepth")
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def register(add_settings_section: bool = True) -> list:
    """Detect the host and register both preprocessors; returns them (empty when the host has no ControlNet)."""
    console_logging()
    host, reason = detect_host()
    if host is None:
        log.warning("FiffDepth: %s; no preprocessors registered", reason)
        return []
    policy = POLICIES[host]()
    estimator, error_class = Estimator(policy), user_error_class()
    if host == "a1111":
        import scripts.supported_preprocessor as base

        made = [a1111_preprocessor(base, estimator, error_class, name) for name in PREPROCESSORS]
        add = _replacing(base.Preprocessor)
    else:
        import modules_forge.shared as forge_shared
        import modules_forge.supported_preprocessor as base

        made = [forge_preprocessor(base, estimator, error_class, name) for name in PREPROCESSORS]
        add = forge_shared.add_supported_preprocessor
    for preprocessor in made:
        add(preprocessor)
    if add_settings_section:
        add_settings(policy)
    log.info("FiffDepth: registered %s on %s", ", ".join(PREPROCESSORS), reason)
    return made
