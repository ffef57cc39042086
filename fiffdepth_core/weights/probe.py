"""``python -m fiffdepth_core.weights.probe MODEL``: exit 0 when the model is installed or the hub answers for its
pinned commit (one model-info request), else print one line saying why and exit 1. Used by scripts/quickstart.sh."""

from __future__ import annotations

import sys

from .catalogue import get_model
from .download import default_models_dir, installed_path
from .hub_client import DownloadError, announced_files, hub_endpoint, offline


def main(argv: list[str]) -> int:
    try:
        model = get_model(argv[0] if argv else "")
    except ValueError as err:
        print(err)
        return 1
    if installed_path(model, default_models_dir()) is not None:
        return 0
    if offline():
        print("HF_HUB_OFFLINE is set")
        return 1
    try:
        announced_files(model, model.files, hub_endpoint())
    except DownloadError as err:  # value: "model X: model info from URL: <what happened>"
        print(f"the Hugging Face Hub at {hub_endpoint()} does not answer ({err.value.split(': ', 2)[-1]})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
