"""FiffDepth as ControlNet depth preprocessors in Stable-Diffusion WebUIs (AUTOMATIC1111 + sd-webui-controlnet,
Forge, reForge).

The WebUIs import ``scripts/fiffdepth_webui.py``, which calls :func:`fiffdepth_webui.register.register`. The
modules here are adapters only: host detection, registration, settings, checkpoint discovery, and the host's
device/memory policies around :func:`fiffdepth_core.predict_depth`. ``host_agnostic`` parts (``images``,
``checkpoints``, ``cache``) import no WebUI module, so the offline tests exercise them directly.
"""
