"""One error type for input a user can fix, in every wing: what was given (an option, a file, a setting), the value
received and what is allowed, with optional detail lines.

``str(err)`` is ``<value> (<allowed>)`` followed by the detail lines, which is what a host (ComfyUI, the WebUIs) shows.
The command line prints ``ERROR <what>: <value> (<allowed>)`` with the details indented under it
(:mod:`fiffdepth_core.app.errors`). Subclasses set ``what`` and ``allowed`` defaults for their kind of input.
"""

from __future__ import annotations

from collections.abc import Iterable


class UserInputError(ValueError):
    """An input the user can fix cannot be used.

    ``value``: the value received, or what is wrong with it, in words (one line: a multi-line message without
    ``details`` is split into its first line and detail lines). ``allowed``: what would be accepted, or how to fix
    it. ``what``: the option, file or setting (the class default when not given). ``details``: further lines (a
    list of files, the layouts a checkpoint may have).
    """

    what = "input"
    allowed = ""

    def __init__(self, value, allowed: str | None = None, *, what: str | None = None,
                 details: Iterable[str] = ()):
        value, details = str(value), [str(line) for line in details]
        if "\n" in value and not details:
            value, *details = value.split("\n")
        self.value = value.strip()
        self.details = [line.rstrip() for line in details if line.strip()]
        if allowed is not None:
            self.allowed = allowed
        if what is not None:
            self.what = what
        super().__init__(self.describe())

    def describe(self) -> str:
        """``<value> (<allowed>)`` and the detail lines, one per line."""
        line = f"{self.value} ({self.allowed})" if self.allowed else self.value
        return "\n".join([line, *self.details])

    def __str__(self) -> str:
        return self.describe()


class InputNotFoundError(UserInputError, FileNotFoundError):
    """An input file or folder does not exist (a ``FileNotFoundError`` too, for callers that catch those)."""

    allowed = "an existing file or folder"
