"""Stable-Diffusion WebUI entry (AUTOMATIC1111 + sd-webui-controlnet, Forge, reForge).

The WebUIs import every ``*.py`` file directly in ``scripts/`` (the shell scripts beside this file are ignored).
Everything is imported now, while the WebUI has this extension's folder on ``sys.path``; the adapters live in the
``fiffdepth_webui`` package, the method in ``fiffdepth_core``.
"""

from fiffdepth_webui.register import register

register()
