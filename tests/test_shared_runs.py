"""Independent runs sharing an output folder (claims), and what a killed run leaves behind (output log, temporary
files, claims): nothing a rerun or a later run trips on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fiffdepth_core.app.claims import CLAIMS, STALE, Claims, Owner
from fiffdepth_core.app.manifest import MANIFEST, Manifest, log_entries
from fiffdepth_core.app.outputs import list_inputs
from fiffdepth_core.fileio import processes
from fiffdepth_core.fileio.writers import write_atomic

ROOT = Path(__file__).resolve().parents[1]


def finished_pid() -> int:
    """The pid of a process that has ended (nothing runs under it now)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def write_claim(path: Path, owner: Owner, age: float = 0.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(owner.__dict__))
    when = time.time() - age
    os.utime(path, (when, when))


# -- claims --------------------------------------------------------------------------------------------------------
def test_a_claim_is_held_by_one_live_run_at_a_time(tmp_path):
    with Claims(tmp_path, "opts") as first, Claims(tmp_path, "opts") as second:
        assert first.take("a") and not second.take("a")  # the same process: alive, so it keeps its claim
        assert first.take("a")  # taking one's own claim again is fine
        assert second.take("b") and not first.take("b")
        assert [o.run for o in first.others()] == [second.me.run]
        first.release("a")
        assert second.take("a") and not first.holds("a") and second.holds("a")
    assert not (tmp_path / CLAIMS).exists()  # the last run out removes the folder


def test_a_claim_whose_owner_is_gone_is_taken_over(tmp_path):
    dead = Owner(processes.host(), finished_pid(), "", "deadrun", "opts")
    write_claim(tmp_path / CLAIMS / "a.claim", dead)
    reused = Owner(processes.host(), os.getpid(), "not-this-process-start", "oldrun", "opts")  # a pid reused since
    write_claim(tmp_path / CLAIMS / "b.claim", reused)
    far_live = Owner("another-host", 12345, "", "farrun", "opts")
    write_claim(tmp_path / CLAIMS / "c.claim", far_live, age=STALE / 2)  # refreshed recently: alive
    far_gone = Owner("another-host", 12345, "", "farrun2", "opts")
    write_claim(tmp_path / CLAIMS / "d.claim", far_gone, age=STALE + 5)  # not refreshed for longer than STALE
    with Claims(tmp_path, "opts") as claims:
        assert not (tmp_path / CLAIMS / "a.claim").exists()  # swept on entry: its owner is gone
        assert claims.take("a") and claims.take("b") and claims.take("d")
        assert not claims.take("c")
        assert claims.owner("c") == far_live and claims.owner("d").run == claims.me.run


def test_one_run_at_a_time_takes_a_stale_claim_over(tmp_path):
    with Claims(tmp_path, "opts") as claims:
        dead = Owner(processes.host(), finished_pid(), "", "deadrun", "opts")
        write_claim(claims.path("a"), dead)
        marker = claims.path("a").with_name("a.claim.takeover")
        marker.write_text("")  # another run is taking it over right now
        assert not claims.take("a")
        when = time.time() - STALE - 5
        os.utime(marker, (when, when))  # ...or died doing so: the marker goes once it is STALE
        assert not claims.take("a") and not marker.exists()
        assert claims.take("a") and claims.holds("a")


def test_live_claims_are_refreshed(tmp_path):
    with Claims(tmp_path, "opts", heartbeat=0.05) as claims:
        assert claims.take("a")
        old = time.time() - 1000
        os.utime(claims.path("a"), (old, old))
        deadline = time.time() + 30
        while claims.path("a").stat().st_mtime < old + 500 and time.time() < deadline:
            time.sleep(0.05)
        assert claims.path("a").stat().st_mtime > old + 500


def test_a_run_with_other_options_is_refused(tmp_path, monkeypatch):
    from fiffdepth_core.app.claims import SharedRun
    from fiffdepth_core.app.outputs import OutputError

    with Claims(tmp_path, "one"):
        with pytest.raises(OutputError, match="is being written by another run .* with other options"):
            SharedRun(tmp_path, "two").plan()
        assert SharedRun(tmp_path, "one").plan() == set()


# -- the output log ----------------------------------------------------------------------------------------------
def test_a_file_written_again_keeps_one_line(tmp_path):
    log = Manifest(tmp_path, run="r1", options="o")
    (tmp_path / "a.npy").write_bytes(b"1")
    (tmp_path / "b.npy").write_bytes(b"2")
    log.record(tmp_path / "a.npy", tmp_path / "b.npy")
    (tmp_path / "a.npy").write_bytes(b"longer")
    Manifest(tmp_path).record(tmp_path / "a.npy")  # another writer (a rerun) writes it again
    lines = [json.loads(line) for line in (tmp_path / MANIFEST).read_text().splitlines()]
    assert sorted(entry["name"] for entry in lines) == ["a.npy", "b.npy"]
    assert set(log_entries(tmp_path)) == {"a.npy", "b.npy"} and log_entries(tmp_path)["b.npy"]["run"] == "r1"
    with open(tmp_path / MANIFEST, "a") as handle:
        handle.write('{"name": "c.npy", "si')  # a line a crash cut short
    (tmp_path / "d.npy").write_bytes(b"4")
    log.record(tmp_path / "d.npy")  # the instance that knew the log before: reads only what was added
    assert set(log_entries(tmp_path)) == {"a.npy", "b.npy", "d.npy"}


def test_processes_writing_one_log_lose_nothing(tmp_path):
    code = textwrap.dedent("""
        import sys
        from pathlib import Path
        from fiffdepth_core.app.manifest import Manifest
        folder, tag = Path(sys.argv[1]), sys.argv[2]
        log = Manifest(folder, run=tag, options="o")
        for i in range(60):
            path = folder / f"{tag}{i % 40}.npy"
            path.write_bytes(bytes(i))  # files 0..19 are written twice: their lines are replaced
            log.record(path)
    """)
    runs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), tag]) for tag in ("p", "q", "r")]
    assert [run.wait(timeout=300) for run in runs] == [0, 0, 0]
    names = [json.loads(line)["name"] for line in (tmp_path / MANIFEST).read_text().splitlines()]
    assert sorted(names) == sorted(f"{tag}{i}.npy" for tag in "pqr" for i in range(40))  # each once
    assert len(log_entries(tmp_path)) == 120  # and each matches its file


# -- temporary files and hidden files ----------------------------------------------------------------------------
def test_temporary_files_of_a_process_that_is_gone_are_swept(tmp_path):
    gone = processes.tag(finished_pid())
    leftovers = [tmp_path / f".a_depth16.png.{gone}.k2j4h6g8.png", tmp_path / f".fiffdepth-cache.{gone}.x1y2"]
    leftovers[0].write_bytes(b"")
    leftovers[1].mkdir()
    (leftovers[1] / "depth.f32").write_bytes(b"0" * 16)
    kept = [tmp_path / f".b.npy.{processes.tag()}.abcdefgh.npy",  # this process: alive
            tmp_path / ".c.npy.fd-1@another-host.abcdefgh.npy",  # another host: cannot tell
            tmp_path / ".notes.png", tmp_path / "a.png"]  # not ours
    for path in kept:
        path.write_bytes(b"x")
    assert processes.sweep(tmp_path) == 2
    assert not any(p.exists() for p in leftovers) and all(p.exists() for p in kept)


def test_write_atomic_names_its_temporary_file_after_its_writer(tmp_path, monkeypatch):
    seen = []
    write_atomic(tmp_path / "x.png", lambda tmp: seen.append(tmp.name) or tmp.write_bytes(b"1"), overwrite=False)
    assert seen[0].startswith(f".x.png.{processes.tag()}.") and seen[0].endswith(".png")
    assert processes.TAGGED.search(seen[0])["pid"] == str(os.getpid())


def test_hidden_files_in_an_input_folder_are_not_inputs(tmp_path):
    for name in ("a.png", "._a.png", ".a_depth16.png.fd-9@h.k2j4h6g8.png"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_inputs([tmp_path])] == ["a.png"]
    assert [p.name for p in list_inputs([tmp_path / "._a.png"])] == ["._a.png"]  # named directly: taken


# -- whole runs (subprocesses) ------------------------------------------------------------------------------------
RUNNER = textwrap.dedent("""
    # Runs the CLI with its predictor wrapped: every call is logged; the first waits until SYNC_RUNS processes
    # have reached it (so that the runs overlap); KILL_AT=n ends this process with SIGKILL inside the n-th 16-bit PNG
    # write, after its temporary file was made (no clean-up: a killed job).
    import os, signal, sys, time
    from pathlib import Path
    import fiffdepth_core.app.cli as cli
    sync, real = Path(os.environ["SYNC_DIR"]), cli.predict_depth
    def predict(backbone, batch, config, **kw):
        me = sync / f"ready-{os.getpid()}"
        if not me.exists():
            me.touch()
            deadline = time.time() + 300
            while len(list(sync.glob("ready-*"))) < int(os.environ.get("SYNC_RUNS", "1")) and time.time() < deadline:
                time.sleep(0.05)
        with open(sync / "calls.tsv", "a") as handle:
            handle.write(f"{os.getpid()}\\t{batch.shape[0]}\\n")
        time.sleep(float(os.environ.get("SLOW", "0")))
        return real(backbone, batch, config, **kw)
    cli.predict_depth = predict
    if os.environ.get("KILL_AT"):
        from PIL import Image
        fromarray, count = Image.fromarray, [0]
        def killing(*args, **kwargs):
            count[0] += 1
            if count[0] == int(os.environ["KILL_AT"]):
                os.kill(os.getpid(), signal.SIGKILL)
            return fromarray(*args, **kwargs)
        Image.fromarray = killing
    sys.exit(cli.main(sys.argv[1:]))
""")


def start(args: list[str], sync: Path, **env) -> subprocess.Popen:
    sync.mkdir(exist_ok=True)
    environ = {**os.environ, "OMP_NUM_THREADS": "1", "SYNC_DIR": str(sync), **{k: str(v) for k, v in env.items()},
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        environ.pop(name, None)
    return subprocess.Popen([sys.executable, "-c", RUNNER, *args], cwd=ROOT, env=environ, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def photos(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(folder / f"img_{i:02d}.png")
    return folder


def calls(sync: Path) -> dict[int, int]:
    counts: dict[int, int] = {}
    for line in (sync / "calls.tsv").read_text().splitlines():
        pid, size = map(int, line.split("\t"))
        counts[pid] = counts.get(pid, 0) + size
    return counts


@pytest.mark.slow
def test_two_independent_runs_share_a_folder(tmp_path, tiny_checkpoint, tiny_backbone):
    import torch

    from fiffdepth_core.fileio import load_image
    from fiffdepth_core.method.predictor import PredictConfig, predict_depth

    inputs, out, sync = photos(tmp_path / "photos", 40), tmp_path / "out", tmp_path / "sync"
    args = ["predict", str(inputs), "--checkpoint", str(tiny_checkpoint), "--output-dir", str(out), "--format",
            "npy", "png16", "--processing-resolution", "32", "--batch-size", "1", "--workers", "0", "-q"]
    runs = [start(args, sync, SYNC_RUNS=2, SLOW=0.05) for _ in range(2)]
    results = [(run.wait(timeout=600), run.stderr.read()) for run in runs]
    assert [code for code, _ in results] == [0, 0], results
    counts = calls(sync)
    assert sum(counts.values()) == 40 and len(counts) == 2 and min(counts.values()) > 0, counts  # each image once
    expected = {f"img_{i:02d}{suffix}" for i in range(40) for suffix in (".npy", "_depth16.png")}
    assert {p.name for p in out.iterdir() if p.is_file()} == expected | {MANIFEST}  # nothing else left behind
    lines = [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]
    assert sorted(entry["name"] for entry in lines) == sorted(expected)  # each file logged once
    assert set(log_entries(out)) == expected and len({entry["run"] for entry in lines}) == 2
    assert not (out / CLAIMS).exists()
    for i in (0, 17, 39):  # the depth is the model's, whichever run wrote it
        image = load_image(inputs / f"img_{i:02d}.png", rgb=True)[None]
        with torch.inference_mode():
            reference = predict_depth(tiny_backbone, image, PredictConfig(processing_resolution=32))[0].numpy()
        assert np.abs(np.load(out / f"img_{i:02d}.npy") - reference).max() <= 2e-4


@pytest.mark.slow
def test_a_killed_run_leaves_nothing_a_rerun_or_a_later_run_trips_on(tmp_path, tiny_checkpoint):
    folder = photos(tmp_path / "photos", 12)  # outputs go beside the inputs, as a user may ask
    args = ["predict", str(folder), "--checkpoint", str(tiny_checkpoint), "--output-dir", str(folder), "--format",
            "npy", "png16", "--processing-resolution", "32", "--batch-size", "1", "--workers", "0", "-q"]
    killed = start(args, tmp_path / "sync1", KILL_AT=6)
    assert killed.wait(timeout=600) == -signal.SIGKILL, killed.stderr.read()
    temporary = [p for p in folder.iterdir() if p.name.startswith(".img_05_depth16.png.")]
    assert len(temporary) == 1 and temporary[0].stat().st_size == 0  # the situation: a 0-byte hidden temporary
    assert (folder / "img_05.npy").exists() and not (folder / "img_05_depth16.png").exists()

    rerun = start(args + ["--skip-existing"], tmp_path / "sync2")  # the same command, resumed
    assert rerun.wait(timeout=600) == 0, rerun.stderr.read()
    assert calls(tmp_path / "sync2") == {rerun.pid: 7}  # images 5..11: the one cut short is done again
    assert not [p for p in folder.iterdir() if p.name.startswith(".") and p.name != MANIFEST]  # swept, all of it
    lines = [json.loads(line)["name"] for line in (folder / MANIFEST).read_text().splitlines()]
    outputs = {f"img_{i:02d}{suffix}" for i in range(12) for suffix in (".npy", "_depth16.png")}
    assert sorted(lines) == sorted(outputs) and set(log_entries(folder)) == outputs  # one line each, all current

    later = start(["predict", str(folder), "--checkpoint", str(tiny_checkpoint), "--output-dir",
                   str(tmp_path / "again"), "--format", "npy", "--processing-resolution", "32", "-q"], tmp_path / "s3")
    assert later.wait(timeout=600) == 0, later.stderr.read()
    assert sorted(p.name for p in (tmp_path / "again").glob("*.npy")) == [f"img_{i:02d}.npy" for i in range(12)]


@pytest.mark.slow
def test_a_later_run_takes_over_from_a_killed_sharer(tmp_path, tiny_checkpoint):
    """A run killed in the middle of a shared folder: a run that was sharing it finishes its images, including the
    one it was writing when it died, with no error and one log line per file."""
    inputs, out = photos(tmp_path / "photos", 10), tmp_path / "out"
    args = ["predict", str(inputs), "--checkpoint", str(tiny_checkpoint), "--output-dir", str(out), "--format",
            "npy", "png16", "--processing-resolution", "32", "--batch-size", "1", "--workers", "0", "-q"]
    sync = tmp_path / "sync"
    victim = start(args, sync, SYNC_RUNS=2, SLOW=0.2, KILL_AT=2)
    survivor = start(args, sync, SYNC_RUNS=2, SLOW=0.2)
    assert victim.wait(timeout=600) == -signal.SIGKILL
    assert survivor.wait(timeout=600) == 0, survivor.stderr.read()
    outputs = {f"img_{i:02d}{suffix}" for i in range(10) for suffix in (".npy", "_depth16.png")}
    assert {p.name for p in out.iterdir() if p.is_file() and not p.name.startswith(".")} == outputs
    names = [json.loads(line)["name"] for line in (out / MANIFEST).read_text().splitlines()]
    assert sorted(names) == sorted(outputs) and set(log_entries(out)) == outputs

