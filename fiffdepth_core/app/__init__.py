"""The standalone application: the ``python -m fiffdepth_core`` command line, image and video inputs and
outputs, frame sequences, multi-process runs and background decoding. Uses the method, the weights and the I/O layer.
"""

from .cli import main
from .outputs import list_inputs
from .parallel import ProcessGroup, from_env
from .prefetch import decoded, default_workers
from .video import VideoWriter

__all__ = [
    "ProcessGroup", "VideoWriter", "decoded", "default_workers", "from_env", "list_inputs", "main",
]
