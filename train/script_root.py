"""Makes ``python train/<script>.py`` work from any folder: the one place that adjusts ``sys.path``.

Python puts a script's own folder first on ``sys.path``. For the scripts in ``train/`` that folder would shadow
installed packages (``train/datasets`` over 🤗 ``datasets``) and leave the repository's packages (``train``,
``fiffdepth_core``) unimportable, so a script started by path imports this module first, which puts the repository
root in that first place instead. Run as modules (``python -m train.finetune`` from the root) or imported, the
scripts never import it.
"""

import sys
from pathlib import Path

_TRAIN = Path(__file__).resolve().parent
if sys.path and Path(sys.path[0] or ".").resolve() == _TRAIN:
    sys.path[0] = str(_TRAIN.parent)
