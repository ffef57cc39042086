"""``python -m fiffdepth_core predict ...``: see :mod:`fiffdepth_core.app.cli`."""

import sys

from .app.cli import main

sys.exit(main(prog="python -m fiffdepth_core"))
