"""Independent runs sharing one output folder: a claim file per input, taken atomically, released when its outputs
are written.

Several runs started separately over the same inputs into the same ``--output-dir`` (two terminals, the tasks of
an array job) split the work as they go. Before a run decodes an input it takes that input's claim,
``<output-dir>/.fiffdepth-claims/<name>.claim``: a file created only if it does not exist (a hard link of a finished
file, so it is never seen half-written), holding the owner's host, process id, process start time and run id. The
owner removes it once the input's outputs are written and logged. Another run that finds the claim leaves that
input alone while the owner lives, and takes the claim over when the owner is gone: on the owner's host, when its
process no longer runs (or a later process has its pid); from another host, when the owner has not refreshed the
claim's time for :data:`STALE` seconds (a live run refreshes its claims every :data:`HEARTBEAT` seconds). One run
at a time may take over a given claim (a ``.takeover`` file created exclusively decides which).

Each run also holds a run claim, ``<run id>.run``, for as long as it runs, naming the options that decide its
outputs: a run that starts while another writes into the folder knows that the outputs already there are that run's
work (not files in its way), and one with other options is refused before it loads a model.

The torchrun / ``accelerate launch`` path keeps its static split (:mod:`fiffdepth_core.app.parallel`): claims are
for independent runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from ..fileio.processes import host, running, started
from .manifest import log_entries

log = logging.getLogger(__name__)

CLAIMS = ".fiffdepth-claims"
HEARTBEAT = 30.0  # seconds between refreshes of a live run's claims
STALE = 300.0  # seconds without a refresh after which another host's claim is taken to be abandoned


@dataclass(frozen=True)
class Owner:
    """Who holds a claim."""

    host: str
    pid: int
    started: str
    run: str
    options: str

    @classmethod
    def me(cls, run: str, options: str) -> "Owner":
        return cls(host(), os.getpid(), started(os.getpid()), run, options)

    def alive(self, refreshed: float, now: float | None = None) -> bool:
        """Whether the owner still runs: asked of the system on its own host, judged by the claim's refresh time
        (``refreshed``, seconds since the epoch) from another."""
        if self.host == host():
            return running(self.pid, self.started)
        return (time.time() if now is None else now) - refreshed < STALE

    def describe(self) -> str:
        return f"process {self.pid} on {self.host}"


def _read(path: Path) -> tuple[Owner | None, float] | None:
    """``(owner or None if the file is not a claim, refresh time)``; None when there is no such file."""
    try:
        refreshed = path.stat().st_mtime
        data = json.loads(path.read_text())
        return Owner(**{key: data[key] for key in Owner.__dataclass_fields__}), refreshed
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None, 0.0  # damaged (a crash on a file system without hard links): nobody's


class Claims:
    """The claims of one run in ``folder``: ``with Claims(folder, options) as claims: claims.take(name) ...``.

    ``options``: a signature of what decides the outputs (runs with other options must not share the folder).
    Entering takes the run claim and starts the refresh thread; leaving releases every claim this run holds.
    """

    def __init__(self, folder: Path, options: str, heartbeat: float = HEARTBEAT):
        self.root = Path(folder) / CLAIMS
        self.me = Owner.me(uuid.uuid4().hex, options)
        self.heartbeat = heartbeat
        self.held: set[Path] = set()
        self.taken_over: set[Path] = set()  # claims this run took from owners that were gone
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the run claim ---------------------------------------------------------------------------------------------
    def __enter__(self) -> "Claims":
        self.root.mkdir(parents=True, exist_ok=True)
        for path in self.root.glob("*"):  # what runs that are gone left: their takeover markers and claims
            if path.suffix == ".takeover":
                self._drop_stale_marker(path)
            elif path.suffix in (".run", ".claim"):
                found = _read(path)
                if found is not None and (found[0] is None or not found[0].alive(found[1])):
                    self._take_over(path, found[0]) and self._release_path(path)
        if not self._create(self.root / f"{self.me.run}.run"):
            raise FileExistsError(f"run id {self.me.run} is taken")  # a uuid4 collision
        self._thread = threading.Thread(target=self._refresh, name="fiffdepth-claims", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for path in list(self.held):
            self._release_path(path)
        try:
            self.root.rmdir()  # only when no other run's claims are left in it
        except OSError:
            pass
        return False

    def others(self) -> list[Owner]:
        """The other runs that hold a run claim in this folder and are alive."""
        found = []
        for path in self.root.glob("*.run"):
            claim = _read(path)
            if claim is not None and claim[0] is not None and claim[0].run != self.me.run and \
                    claim[0].alive(claim[1]):
                found.append(claim[0])
        return found

    # -- claims per input ------------------------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        return self.root / f"{name}.claim"

    def take(self, name: str) -> bool:
        """Take the claim on ``name``: True when this run holds it now (newly, or taken over from an owner that is
        gone), False when a live run holds it (or is taking it over at this moment)."""
        path = self.path(name)
        for _ in range(3):  # the claim may vanish between looking and taking (its owner finished): look again
            if self._create(path):
                return True
            found = _read(path)
            if found is None:
                continue
            owner, refreshed = found
            if owner is not None and owner.run == self.me.run:
                return True
            if owner is not None and owner.alive(refreshed):
                return False
            return self._take_over(path, owner)
        return False

    def owner(self, name: str) -> Owner | None:
        """The live owner of ``name``'s claim, if any (this run included)."""
        found = _read(self.path(name))
        if found is None or found[0] is None or not found[0].alive(found[1]):
            return None
        return found[0]

    def holds(self, name: str) -> bool:
        """Whether the claim on ``name`` is still this run's (not taken over by a run that thought it gone)."""
        found = _read(self.path(name))
        return found is not None and found[0] is not None and found[0].run == self.me.run

    def release(self, name: str) -> None:
        """Give the claim on ``name`` up (its outputs are written)."""
        self._release_path(self.path(name))

    # -- the file operations ---------------------------------------------------------------------------------------
    def _content(self) -> str:
        return json.dumps(asdict(self.me)) + "\n"

    def _scratch(self, path: Path) -> Path:
        return path.with_name(f".{path.name}.{self.me.run}.tmp")

    def _create(self, path: Path) -> bool:
        """Create ``path`` holding this run's claim, only if it does not exist (atomically)."""
        tmp = self._scratch(path)
        tmp.write_text(self._content())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # no hard links on this file system: exclusive creation instead
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as handle:
                handle.write(self._content())
        finally:
            tmp.unlink(missing_ok=True)
        with self._lock:
            self.held.add(path)
        return True

    def _take_over(self, path: Path, stale: Owner | None) -> bool:
        """Replace the claim at ``path`` (held by ``stale``, who is gone) with this run's; False when another run is
        taking it over at the same moment, or the claim changed meanwhile."""
        marker = path.with_name(path.name + ".takeover")
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            self._drop_stale_marker(marker)
            return False
        try:
            found = _read(path)
            if found is None:
                return self._create(path)
            if found[0] != stale:
                return False
            tmp = self._scratch(path)
            tmp.write_text(self._content())
            os.replace(tmp, path)
            with self._lock:
                self.held.add(path)
                self.taken_over.add(path)
            if stale is not None:
                log.info("took over %s from %s, which is gone", path.name, stale.describe())
            return True
        finally:
            marker.unlink(missing_ok=True)

    def _drop_stale_marker(self, marker: Path) -> None:
        """A takeover marker whose taker died in the middle of it (older than STALE) is removed."""
        try:
            if time.time() - marker.stat().st_mtime > STALE:
                marker.unlink(missing_ok=True)
        except OSError:
            pass

    def _release_path(self, path: Path) -> None:
        with self._lock:
            self.held.discard(path)
        found = _read(path)
        if found is not None and found[0] is not None and found[0].run == self.me.run:
            path.unlink(missing_ok=True)

    def _refresh(self) -> None:
        """Touch every claim this run holds every ``heartbeat`` seconds, so other hosts see it is alive."""
        while not self._stop.wait(self.heartbeat):
            with self._lock:
                paths = list(self.held)
            for path in paths:
                try:
                    os.utime(path)
                except OSError:
                    pass


def live_runs(folder: Path) -> list[Owner]:
    """The runs that hold a run claim in ``folder`` and are alive (read only: creates nothing)."""
    found = []
    for path in (Path(folder) / CLAIMS).glob("*.run"):
        claim = _read(path)
        if claim is not None and claim[0] is not None and claim[0].alive(claim[1]):
            found.append(claim[0])
    return found


def options_signature(args) -> str:
    """What decides a CLI run's outputs, in 12 hex digits: runs may share a folder only when these agree (the
    device, precision and batch size may differ between them)."""
    checkpoint = Path(args.checkpoint).expanduser()
    decisive = [str(checkpoint.resolve() if checkpoint.exists() else args.checkpoint), args.family,
                args.processing_resolution, args.depth_pass, sorted(args.format), args.normalization, args.temporal,
                args.stream_window]
    return hashlib.sha256(json.dumps(decisive).encode()).hexdigest()[:12]


class SharedRun:
    """One CLI run's part in an output folder that independent runs may share; ``enabled=False`` (the processes of
    one torchrun job, which split their inputs statically) shares nothing and takes every input.

    Before the model loads, :meth:`plan` looks at the runs already writing there (read only). Then ``with
    shared:`` registers this run; :meth:`take` claims an input before it is decoded, skipping those another live
    run holds and those the job has finished; :meth:`release` gives the claim up once the outputs are logged.
    """

    def __init__(self, folder: Path, options: str, enabled: bool = True):
        self.folder, self.options, self.enabled = Path(folder), options, enabled
        self.claims = Claims(self.folder, options)
        self.job: set[str] = {self.claims.me.run}  # run ids of this job: this run and the live sharers seen
        self.started_ns = time.time_ns()
        self._active = False

    @property
    def run(self) -> str:
        return self.claims.me.run

    def plan(self) -> set[str]:
        """Names of the files in the folder that live runs of this job wrote (not in this run's way). A live run
        with other options is refused: the two would mix two sets of results in one folder."""
        if not self.enabled:
            return set()
        from .outputs import OutputError

        for owner in live_runs(self.folder):
            if owner.options != self.options:
                raise OutputError(f"{self.folder} is being written by another run ({owner.describe()}) with other "
                                  "options", "wait for it to finish, or choose another --output-dir")
            self.job.add(owner.run)
        return {name for name, entry in log_entries(self.folder).items() if entry.get("run") in self.job}

    def __enter__(self) -> "SharedRun":
        if self.enabled:
            self.claims.__enter__()
            self._active = True
        return self

    def __exit__(self, *exc) -> bool:
        if self._active:
            self._active = False
            self.claims.__exit__(*exc)
        return False

    def take(self, name: str, outputs: list[Path]) -> bool:
        """Claim input ``name`` whose outputs are ``outputs``: False when a live run holds it, or the job finished it
        meanwhile (the claim is given back then)."""
        if not self._active:
            return True
        if not self.claims.take(name):
            owner = self.claims.owner(name)
            if owner is not None and owner.options == self.options:
                self.job.add(owner.run)
            return False
        if self.done(outputs):
            self.claims.release(name)  # another run of the job finished it meanwhile
            return False
        return True

    def done(self, outputs) -> bool:
        """Whether ``outputs`` all exist, written by this job."""
        outputs = list(outputs)
        return bool(outputs) and all(path.exists() for path in outputs) and all(self.by_job(p) for p in outputs)

    def elsewhere(self, name: str) -> bool:
        """Whether another live run holds the claim on ``name`` (read only)."""
        owner = self.claims.owner(name) if self.enabled else None
        return owner is not None and owner.run != self.run

    def took_over(self, name: str) -> bool:
        """Whether this run took ``name``'s claim from a run that was gone (its partial outputs may be replaced)."""
        return self.claims.path(name) in self.claims.taken_over

    def by_job(self, path: Path) -> bool:
        """Whether ``path`` is a file this job wrote (this run, or another run with the same options that was live
        while this one ran), unchanged since: it may be replaced, and counts as done."""
        entry = log_entries(path.parent).get(path.name)
        if entry is None or entry.get("options") != self.options:
            return False
        return entry.get("run") in self.job or entry["mtime_ns"] >= self.started_ns

    def holds(self, name: str) -> bool:
        """Whether this run still holds ``name`` (always, when not sharing)."""
        return not self._active or self.claims.holds(name)

    def release(self, name: str) -> None:
        if self._active:
            self.claims.release(name)
