"""The catalogue on the command line: ``models`` (what exists, what is installed where), ``download ID [--dest DIR]``,
and ``predict --checkpoint ID``, which installs a catalogue model on first use.

Models go to ``--models-dir`` (``predict``, ``models``) or ``--dest`` (``download``), by default the user cache
folder (:func:`fiffdepth_core.weights.download.default_models_dir`; ``$FIFFDEPTH_MODELS`` moves it). An installed
model is used with no network request; ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``, proxies and ``HF_TOKEN`` work as
``huggingface_hub`` defines them (docs/models.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..weights.catalogue import CATALOGUE, DEFAULT_ID, find_model, get_model, human_size
from ..weights.download import default_models_dir, ensure_model, model_state

log = logging.getLogger("fiffdepth")

MODELS_DIR_HELP = ("folder for catalogue models (default: $FIFFDEPTH_MODELS, else the user cache, "
                   f"{default_models_dir()})")


def add_commands(sub, commands: dict) -> None:
    """The ``models`` and ``download`` subcommands (added to ``commands``, name -> parser)."""
    m = sub.add_parser("models", help="the downloadable models and where each is installed",
                       description="List the catalogue of public models the pack runs, and what is installed.")
    m.add_argument("--models-dir", type=Path, default=None, metavar="DIR", help=MODELS_DIR_HELP)
    d = sub.add_parser("download", help="download a catalogue model (checked against the hub's checksums)",
                       description="Download a catalogue model into DEST/<id>, verified; an interrupted download "
                       "resumes.")
    d.add_argument("model", metavar="MODEL",
                   help="catalogue id (the models command lists them) or its Hugging Face repository id")
    d.add_argument("--dest", type=Path, default=None, metavar="DIR", help="folder to install into; the model lands "
                   f"in DIR/<id> (default: $FIFFDEPTH_MODELS, else {default_models_dir()})")
    d.add_argument("--fp32", action="store_true", help="fetch fp32 weights where a model also publishes fp16 ones")
    for p in (m, d):
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, warnings only")
        p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    commands.update(models=m, download=d)


def run_models(args) -> int:
    root = args.models_dir or default_models_dir()
    lines = [f"Models in {root} (install one with: python -m fiffdepth_core download ID):", ""]
    for model in CATALOGUE:
        state, detail = model_state(model, root)
        where = {"installed": f"installed in {detail}", "missing": "not installed",
                 "partial": f"partly downloaded ({detail}; `download` resumes it)",
                 "damaged": f"damaged ({detail}; `download` fetches it again)"}[state]
        default = ", default" if model.id == DEFAULT_ID else ""
        lines.append(f"{model.id}  [{model.title}, {model.family}{default}]")
        lines.append(f"    {where}; download {human_size(model.size)}; licence {model.licence}")
        lines.append(f"    {model.repo}@{model.revision[:12]}: {model.note}")
    print("\n".join(lines))
    return 0


def run_download(args) -> int:
    model = get_model(args.model)
    root = args.dest or default_models_dir()
    folder = ensure_model(model, root, progress=byte_bar(model.id, args.quiet), fp32=args.fp32)
    print(folder)
    return 0


def resolve_checkpoint(checkpoint: str, family: str, models_dir: Path | None, quiet: bool) -> tuple[str, str]:
    """(path, family) for ``predict --checkpoint``: an existing path as given; a catalogue id or repository id is
    installed (first use: downloaded) in the models folder and runs as its catalogue family unless one is asked."""
    if Path(checkpoint).expanduser().exists():
        return checkpoint, family
    model = find_model(checkpoint)
    if model is None:
        return checkpoint, family  # the loader's own message: not found, and the layouts it reads
    root = models_dir or default_models_dir()
    folder = ensure_model(model, root, progress=byte_bar(model.id, quiet))
    return str(folder), model.family if family == "auto" else family


class byte_bar:  # noqa: N801 - used as a progress callback
    """A tqdm bar in bytes for a download (nothing when quiet or without tqdm)."""

    def __init__(self, name: str, quiet: bool):
        self.name, self.quiet, self.bar = name, quiet, None

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.bar is None:
            try:
                from tqdm import tqdm
            except ImportError:
                self.quiet = True
                return
            self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1000, desc=f"download {self.name}")
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.bar.close()
