"""Who is writing: this process's host and id, whether a process is still running, and the clean-up of what a
process that is gone left behind (temporary files and caches named after their writer).

A temporary file or folder that :mod:`fiffdepth_core.fileio.writers` and the CLI make carries its writer's tag in
its name (``.a_depth16.png.fd-1234@myhost.k2j4h6g8.png``). A run killed with SIGKILL cannot remove its own; the next
run into the folder does (:func:`sweep`), for writers of this host whose process is gone, and leaves the rest.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
from pathlib import Path

log = logging.getLogger(__name__)


def host() -> str:
    """This machine's name, as it appears in tags (letters, digits and ``-`` only)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "localhost"


def tag(pid: int | None = None) -> str:
    """``fd-<pid>@<host>``: the writer's tag in temporary names."""
    return f"fd-{os.getpid() if pid is None else pid}@{host()}"


TAGGED = re.compile(r"\.fd-(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)[.-]")


def started(pid: int) -> str:
    """When process ``pid`` started, as an opaque token ("" where the system does not say): two processes that
    share a reused pid differ in it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (command) "
    return fields[19] if len(fields) > 19 else ""  # field 22 of the line: start time in clock ticks after boot


def running(pid: int, start: str = "") -> bool:
    """Whether process ``pid`` of this host still runs (and, when ``start`` is given, is the process that started
    then, not a later one that reuses the pid)."""
    if pid == os.getpid():
        return not start or start == started(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    except OSError:
        return False
    now = started(pid)
    return not (start and now and now != start)


def sweep(folder: Path) -> int:
    """Remove the temporary files and folders in ``folder`` whose writer (by its tag) ran on this host and is gone;
    returns how many. Other hosts' and live writers' are left alone."""
    removed = 0
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return 0
    me = host()
    for entry in entries:
        match = TAGGED.search(entry.name) if entry.name.startswith(".") else None
        if match is None or match["host"] != me or running(int(match["pid"])):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed += 1
        except OSError as err:
            log.warning("cannot remove %s, left by a run that is gone: %s", entry, err.strerror or err)
    if removed:
        log.info("%s: removed %d temporary file(s) left by a run that was killed", folder, removed)
    return removed
