"""Run a job as ``__main__`` under torchrun, optionally killing one process in the middle of it (tests only).

    python scaleout_driver.py TARGET ARGS...        TARGET: a module name (``fiffdepth_core``) or a script path

``SCALEOUT_PATCH`` is a comma-separated list of ``module:function`` (record the calls) or
``module:function:rank:calls`` (also end the process of that rank abruptly, ``os._exit`` like a killed job, no
clean-up, when the function is called after ``calls`` completed calls). Every completed call's first argument is
appended to ``SCALEOUT_LOG`` (one line per call: ``rank<TAB>function<TAB>argument``).
"""

from __future__ import annotations

import importlib
import os
import runpy
import sys


def _patch(module_name: str, name: str, crash_rank: int | None, calls: int | None) -> None:
    module = importlib.import_module(module_name)
    original = getattr(module, name)
    rank = int(os.environ.get("RANK", "0"))
    log = os.environ.get("SCALEOUT_LOG")
    done = [0]

    def wrapper(*args, **kwargs):
        if crash_rank == rank and done[0] == calls:
            os._exit(137)
        result = original(*args, **kwargs)
        done[0] += 1
        if log:
            with open(log, "a") as handle:
                handle.write(f"{rank}\t{name}\t{args[0] if args else ''}\n")
        return result

    setattr(module, name, wrapper)
    for other in list(sys.modules.values()):  # packages re-exporting it (fiffdepth_core.fileio.write_npy) too
        if other is not module and getattr(other, name, None) is original:
            setattr(other, name, wrapper)
    for table in vars(module).values():  # registries such as fiffdepth_core.fileio.writers.WRITERS hold the function too
        if isinstance(table, dict):
            for key, value in list(table.items()):
                if value is original:
                    table[key] = wrapper


def main() -> None:
    for spec in filter(None, os.environ.get("SCALEOUT_PATCH", "").split(",")):
        parts = spec.split(":")
        crash = (int(parts[2]), int(parts[3])) if len(parts) == 4 else (None, None)
        _patch(parts[0], parts[1], *crash)
    target, sys.argv = sys.argv[1], sys.argv[1:]
    if target.endswith(".py"):  # as `python SCRIPT`: the script's folder, not this one, first on sys.path
        sys.path[0] = os.path.dirname(os.path.abspath(target))
        runpy.run_path(target, run_name="__main__")
    else:
        runpy.run_module(target, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
