"""Old home of two test helpers, kept only while work written against it lands; import from the new homes:
``fiffdepth_testkit.images.seeded_images`` and ``comfy_server.stop_process`` (workflows/tools)."""

from comfy_server import stop_process  # noqa: F401
from fiffdepth_testkit.images import seeded_images  # noqa: F401
