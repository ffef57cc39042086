"""Shared scaffolding for tests and benchmarks: seeded inputs and loading the pack into a real ComfyUI.

Not part of the product: ``pyproject.toml`` installs ``fiffdepth_core`` only, and nothing in ``fiffdepth_core``,
``nodes/`` or ``train/`` imports this package. The name is unusual on purpose: some hosts put every top-level
folder of an extension on ``sys.path``.
"""
