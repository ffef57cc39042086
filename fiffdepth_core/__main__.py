"""``python -m fiffdepth_core predict ...``: see :mod:`fiffdepth_core.cli`."""

import sys

from .cli import main

sys.exit(main())
