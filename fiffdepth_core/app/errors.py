"""How the command line fails: one form for every error, in every subcommand and path.

::

    ERROR <what>: <the value> (<what is allowed>)
      <detail line>
      <detail line>
    --debug shows the traceback

and exit status :data:`EXIT_ERROR`. ``<what>`` is the option, file or setting at fault. Errors a user can fix are
:class:`~fiffdepth_core.fileio.errors.UserInputError` (raise one, or a subclass, with ``what``, the value and what is
allowed: the subcommand needs nothing else); other exceptions are described from their type and message. The
argument parser's own errors take the same form (:class:`Parser`), with the ``--help`` hint in place of ``--debug``.
"""

from __future__ import annotations

import argparse
import logging
import re

from ..fileio.errors import UserInputError
from ..fileio.headers import ImageInputError
from ..method.planning import InsufficientMemoryError
from ..method.predictor import NonFiniteOutputError
from ..weights.layout import LAYOUTS, CheckpointError
from .outputs import OutputWriteError
from .parallel import WorkerFailedError

EXIT_ERROR = 2  # every error, as argparse's own
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM (128 + SIGINT, as shells report it)
DEBUG_HINT = "--debug shows the traceback"
INDENT = "  "

# The option an error class is about, where the class itself cannot know it (a host has no --checkpoint option).
OPTION_OF = {CheckpointError: "--checkpoint"}
# What is allowed, for the errors of a class that do not say it themselves.
ALLOWED_OF = {CheckpointError: LAYOUTS,
              ImageInputError: "an image (PNG, JPEG, WebP, BMP or TIFF) within the pixel limit"}
# ``what`` for errors that are not UserInputError.
WHAT_OF = ((InsufficientMemoryError, "memory"), (NonFiniteOutputError, "output"), (OutputWriteError, "output"),
           (WorkerFailedError, "another process"), (ImportError, "dependency"), (FileNotFoundError, "input"),
           (FileExistsError, "output"), (MemoryError, "memory"), (OSError, "file"))
KNOWN = (ValueError, OSError, ImportError, MemoryError, NonFiniteOutputError, OutputWriteError, WorkerFailedError)


def parts(err: BaseException) -> tuple[str, str, str, list[str]]:
    """``(what, value, allowed, details)`` of any exception, for :func:`error_text`."""
    if isinstance(err, UserInputError):
        what = next((name for cls, name in OPTION_OF.items() if isinstance(err, cls)), err.what)
        allowed = err.allowed or next((text for cls, text in ALLOWED_OF.items() if isinstance(err, cls)), "")
        return what, err.value, allowed, list(err.details)
    message = str(err).strip() or type(err).__name__
    if isinstance(err, OSError) and err.strerror and err.filename:  # "[Errno 2] No such file ...: 'x'"
        message = f"{err.filename}: {err.strerror}"
    first, *details = message.split("\n")
    what = next((name for cls, name in WHAT_OF if isinstance(err, cls)), None)
    if what is None:
        what = "input" if isinstance(err, ValueError) else "unexpected error"
        if not isinstance(err, KNOWN):
            first = f"{type(err).__name__}: {first}"
    value, allowed = getattr(err, "value", None), getattr(err, "allowed", None)
    if isinstance(value, str) and isinstance(allowed, str):  # structured without being a UserInputError
        return what, value, allowed, details
    return what, first.strip(), "", details


def error_text(err: BaseException) -> str:
    """``<what>: <value> (<allowed>)`` and the details, indented one step under it (the CLI's form, less the
    ``ERROR`` level name and the hint line that :class:`ErrorFormatter` adds)."""
    what, value, allowed, details = parts(err)
    line = f"{what}: {value}" + (f" ({allowed})" if allowed else "")
    return "\n".join([line, *(INDENT + d for d in details)])


class ErrorFormatter(logging.Formatter):
    """``LEVEL message``; a record with a ``hint`` attribute (an error report) gets the hint on a line of its own."""

    def __init__(self):
        super().__init__("%(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        hint = getattr(record, "hint", None)
        return f"{text}\n{hint}" if hint else text


def setup_logging(quiet: bool) -> None:
    """The CLI's logging: ``LEVEL message`` on stderr, INFO and up (warnings only with ``quiet``); error reports in
    the form above. Leaves logging alone when the caller (a host, a test) configured it already."""
    handler = logging.StreamHandler()
    handler.setFormatter(ErrorFormatter())
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, handlers=[handler])
    for name in ("diffusers", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in ("httpx", "httpx2", "huggingface_hub"):  # a download logs each request at INFO: the bar says enough
        logging.getLogger(name).setLevel(logging.WARNING)


def report(err: BaseException, log: logging.Logger, hint: str = DEBUG_HINT) -> int:
    """Log ``err`` in the CLI's form (one record: the error line and its details; the hint comes from the
    formatter); returns :data:`EXIT_ERROR`."""
    log.error("%s", error_text(err), extra={"hint": hint})
    return EXIT_ERROR


# -- the argument parser's errors --------------------------------------------------------------------------------------
_ARGPARSE = (  # argparse's messages (Python 3.9-3.13) -> (what, value, allowed)
    (r"argument (?P<what>[^:]+): invalid choice: (?P<value>.+?) \((?P<allowed>choose from .+)\)$", None),
    (r"argument (?P<what>[^:]+): invalid (?P<kind>int|float) value: (?P<value>.+)$", None),
    (r"argument (?P<what>[^:]+): expected (?P<allowed>.+ arguments?)$", "missing"),
    (r"argument (?P<what>[^:]+): ignored explicit argument (?P<value>.+)$", None),
    (r"the following arguments are required: (?P<value>.+)$", "required"),
    (r"unrecognized arguments: (?P<value>.+)$", "unrecognized"),
)
_KINDS = {"int": "a whole number", "float": "a number"}


def parse_error(message: str, prog: str) -> tuple[str, str, str]:
    """``(what, value, allowed)`` for one of argparse's error messages."""
    for pattern, kind in _ARGPARSE:
        match = re.match(pattern, message)
        if not match:
            continue
        found = match.groupdict()
        what = found.get("what") or "arguments"
        what = what.split("/")[-1] if what.startswith("-") else what.lower()  # "-q/--quiet" -> "--quiet"
        if kind == "missing":
            return what, "no value", found["allowed"]
        if kind == "required":
            return "arguments", f"missing {found['value']}", f"required by {prog}"
        if kind == "unrecognized":
            return "arguments", f"{found['value']} not recognised", f"the options {prog} --help lists"
        allowed = found.get("allowed") or _KINDS.get(found.get("kind"), "see --help")
        return what, found["value"], allowed
    return "arguments", message, f"see {prog} --help"


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors take the CLI's one form (exit status :data:`EXIT_ERROR`)."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        what, value, allowed = parse_error(message, self.prog)
        self.exit(EXIT_ERROR, f"ERROR {what}: {value} ({allowed})\n{self.prog} --help lists the options\n")

