"""The command line keeps freed memory for its next allocations (glibc): activations freed and taken again are not
faulted in anew. Measured as the page faults of repeated passes of a small convolution stack, in fresh processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fiffdepth_core.app.allocator import keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import json, resource, sys
import torch
from fiffdepth_core.app.allocator import keep_freed_memory
done = keep_freed_memory() if sys.argv[1] == "keep" else False
torch.manual_seed(0)
net = torch.nn.Sequential(*[torch.nn.Conv2d(64, 64, 3, padding=1) for _ in range(4)])
x = torch.randn(1, 64, 160, 160)  # 6.5 MB activations, freed and taken again layer after layer
faults = []
with torch.inference_mode():
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        net(x).sum()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"done": done, "faults": faults}))
"""


def probe(mode: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "LD_PRELOAD"))}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**clean, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"),
                    reason="glibc's allocator")
def test_later_passes_reuse_freed_memory_without_faulting_it_in_again():
    """Measured here: plain glibc faults 8,000-12,800 pages in again on every later pass, kept 0-1,600."""
    activation = 64 * 160 * 160 * 4 // os.sysconf("SC_PAGE_SIZE")  # pages of one activation
    plain, kept = probe("plain"), probe("keep")
    assert plain["done"] is False and kept["done"] is True
    assert min(plain["faults"][1:]) >= activation, plain  # every pass takes fresh pages
    assert kept["faults"][0] >= activation, kept  # the first pass has to fault its memory in
    assert sum(kept["faults"][1:]) * 4 < sum(plain["faults"][1:]), (kept, plain)


def test_the_users_own_allocator_settings_are_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert keep_freed_memory() is False
    assert probe("keep", MALLOC_ARENA_MAX="2", GLIBC_TUNABLES="glibc.malloc.trim_threshold=131072")["done"] is False


def test_the_command_line_tunes_its_own_process_only(monkeypatch):
    """Run as the program (no argument list) the CLI keeps freed memory; called from Python (in-process tests, other
    programs) it leaves the caller's allocator alone."""
    import fiffdepth_core.app.cli as cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(1))
    with pytest.raises(SystemExit):
        cli.main(["predict", "--help"])
    assert calls == []
    monkeypatch.setattr(sys, "argv", ["fiffdepth", "predict", "--help"])
    with pytest.raises(SystemExit):
        cli.main()
    assert calls == [1]


RETURN_PROBE = """
import json, resource, sys
import torch
from fiffdepth_core.app.allocator import return_freed_memory
done = return_freed_memory() if sys.argv[1] == "return" else False
faults = []
for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.empty(24 * 2**20, dtype=torch.uint8).fill_(1)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del block
print(json.dumps({"done": done, "faults": faults}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"),
                    reason="glibc's allocator")
def test_training_on_the_cpu_hands_freed_blocks_back():
    """Plain glibc raises its threshold after the first freed 24 MB block and keeps the next ones (no faults from the
    third round on); with ``return_freed_memory`` every block is handed back and faulted in anew."""
    def run(mode: str) -> dict:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "LD_PRELOAD"))}
        out = subprocess.run([sys.executable, "-c", RETURN_PROBE, mode], capture_output=True, text=True, check=True,
                             cwd=ROOT, env={**clean, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
        return json.loads(out.stdout.strip().splitlines()[-1])

    pages = 24 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    plain, returned = run("plain"), run("return")
    assert returned["done"] is True and plain["done"] is False
    assert min(plain["faults"][2:]) < pages // 10, plain
    assert min(returned["faults"]) >= pages // 2, returned
