"""The output log of a folder, ``.fiffdepth-outputs.jsonl``: which files there a FiffDepth run wrote.

One JSON line per file: its name, size and modification time (ns) and, for the CLI's runs, the run that wrote it
(``run``: its id; ``options``: the signature of the options that decided the content, see
:mod:`fiffdepth_core.app.claims`). A file changed since (another size or time) no longer counts as ours. The log
holds one line per name: a file written again (a resumed run, ``--overwrite``) replaces its line, so a run killed
half way leaves no stale duplicate behind. Lines are appended whole; the log is rewritten (atomically, through a
temporary file) only when a name comes again. Runs that share the folder take an exclusive lock on the log first
(``fcntl.flock``, where the system has it).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from ..fileio.writers import write_atomic

try:
    import fcntl
except ImportError:  # Windows: no lock (runs there do not share a folder)
    fcntl = None

MANIFEST = ".fiffdepth-outputs.jsonl"


def stamp(path: Path) -> tuple[int, int] | None:
    """``(size, modification time in ns)`` of ``path``, None if it is not there."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns


def _parse(line: bytes | str) -> dict | None:
    try:
        entry = json.loads(line)
        name, size, mtime = entry["name"], entry["size"], entry["mtime_ns"]
    except (ValueError, KeyError, TypeError):
        return None  # a line cut short by a crash
    ok = isinstance(name, str) and name and "/" not in name and isinstance(size, int) and isinstance(mtime, int)
    return entry if ok else None


def log_entries(folder: Path) -> dict[str, dict]:
    """Every file the log of ``folder`` names that is there unchanged since it was logged: name -> its entry."""
    try:
        lines = (Path(folder) / MANIFEST).read_bytes().splitlines()
    except OSError:
        return {}
    entries = {}
    for line in lines:
        entry = _parse(line)
        if entry is not None:
            entries[entry["name"]] = entry  # the last line of a name counts
    return {name: entry for name, entry in entries.items()
            if stamp(Path(folder) / name) == (entry["size"], entry["mtime_ns"])}


def written_here(folder: Path) -> set[str]:
    """Names of files in ``folder`` that this project wrote and that are unchanged since."""
    return set(log_entries(folder))


class Manifest:
    """The log of ``folder``: :meth:`record` the files a run has written there.

    ``run`` and ``options`` (the CLI's run id and option signature) go into each line when given.
    """

    def __init__(self, folder: Path, run: str | None = None, options: str | None = None):
        self.path = Path(folder) / MANIFEST
        self.run, self.options = run, options
        self._names: set[str] = set()  # names in the log as far as it was read: (inode, bytes read)
        self._read = (None, 0)

    def record(self, *paths: Path) -> None:
        """Log ``paths`` (files just written in the folder), one line each, replacing earlier lines of their names."""
        lines: dict[str, bytes] = {}
        for path in paths:
            found = stamp(path)
            if found is not None:
                entry = {"name": path.name, "size": found[0], "mtime_ns": found[1]}
                if self.run is not None:
                    entry.update(run=self.run, options=self.options)
                lines[path.name] = (json.dumps(entry) + "\n").encode()
        if not lines:
            return
        with self._locked() as handle:
            self._catch_up(handle)
            if self._names.isdisjoint(lines):
                handle.seek(0, os.SEEK_END)
                if handle.tell():  # after a line a crash cut short, start a new one
                    handle.seek(-1, os.SEEK_END)
                    if handle.read(1) != b"\n":
                        handle.write(b"\n")
                handle.write(b"".join(lines.values()))
                handle.flush()
                self._names |= set(lines)
                self._read = (self._read[0], handle.tell())
            else:
                self._rewrite(handle, lines)

    def _catch_up(self, handle) -> None:
        """Bring the known names up to date with the log (only the lines added since the last look)."""
        info = os.fstat(handle.fileno())
        inode, done = self._read
        if inode != info.st_ino or info.st_size < done:
            self._names, done = set(), 0
        handle.seek(done)
        tail = handle.read()
        complete = tail[:tail.rfind(b"\n") + 1]  # a line being cut short is read again next time
        for line in complete.splitlines():
            entry = _parse(line)
            if entry is not None:
                self._names.add(entry["name"])
        self._read = (info.st_ino, done + len(complete))

    def _rewrite(self, handle, lines: dict[str, bytes]) -> None:
        """The log without the earlier lines of ``lines``' names, then those lines, in place of the old one."""
        handle.seek(0)
        kept = [line + b"\n" for line in handle.read().splitlines()
                if (entry := _parse(line)) is not None and entry["name"] not in lines]
        text = b"".join(kept) + b"".join(lines.values())
        write_atomic(self.path, lambda tmp: tmp.write_bytes(text), overwrite=True)
        self._names = {entry["name"] for line in text.splitlines() if (entry := _parse(line)) is not None}
        self._read = (self.path.stat().st_ino, len(text))

    @contextlib.contextmanager
    def _locked(self) -> Iterator:
        """The log, open for reading and appending, locked against the other runs writing it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            handle = open(self.path, "a+b")
            if fcntl is None:
                break
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:  # another run may have replaced the log while this one waited: lock the current one
                if os.fstat(handle.fileno()).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            handle.close()
        try:
            yield handle
        finally:
            handle.close()  # releases the lock
