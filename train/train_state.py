"""Resumable training state in formats that cannot run code: safetensors for tensors, JSON for everything else.

A checkpoint folder holds::

    model.safetensors         the trained module's weights (written by the main process)
    optimizer.safetensors     optimizer tensors; the header metadata holds the rest as JSON (param groups, counters)
    scheduler.json            the LR schedule's counters
    ema.safetensors           EMA shadow weights and counters (runs with EMA only)
    scaler.json               the fp16 loss scaler (fp16 mixed precision only)
    rng_<rank>.safetensors    each process's RNG states (torch CPU and CUDA, numpy, Python)
    trainer.json              step and best metric, written last: its presence marks a complete checkpoint

Nothing here is unpickled: a nested state is split into a JSON skeleton (dicts, lists, numbers, strings) and a
flat table of tensors, and rebuilt from exactly those two things. A folder that holds pickle files (as other
trainers and older versions write) is refused before anything in it is opened.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import torch

from fiffdepth_core.fileio import write_atomic, write_state_dict

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".joblib")
SKELETON = "fiffdepth_skeleton"


class StateError(ValueError):
    """A checkpoint folder is incomplete, malformed, or in a format that could run code when loaded."""


# --- a nested state <-> (JSON skeleton, flat tensors) -------------------------------------------------------------

def split_state(obj, tensors: dict[str, torch.Tensor], path: str = "s"):
    """``obj`` as a JSON-ready skeleton; every tensor (and numpy array) goes into ``tensors`` under a key."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach()  # written from its own memory (moved to the CPU one tensor at a time)
        return {"__tensor__": path}
    if isinstance(obj, np.ndarray):
        tensors[path] = torch.from_numpy(np.ascontiguousarray(obj).astype(np.int64 if obj.dtype.kind in "ui"
                                                                           else obj.dtype))
        return {"__ndarray__": path, "dtype": obj.dtype.str}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: split_state(v, tensors, f"{path}.{k}") for k, v in obj.items()}
        return {"__items__": [[_key(k), split_state(v, tensors, f"{path}.{i}")] for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, tuple):
        return {"__tuple__": [split_state(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [split_state(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot save a {type(obj).__name__} in training state at {path}")


def _key(key):
    if key is None or isinstance(key, (bool, int, float, str)):
        return key
    raise TypeError(f"cannot save a dict key of type {type(key).__name__} in training state")


def join_state(skeleton, tensors: dict[str, torch.Tensor], where: str):
    """The inverse of :func:`split_state`: only JSON values and tensors from ``tensors`` come back."""
    if isinstance(skeleton, list):
        return [join_state(v, tensors, where) for v in skeleton]
    if not isinstance(skeleton, dict):
        return skeleton
    if "__tensor__" in skeleton or "__ndarray__" in skeleton:
        key = skeleton.get("__tensor__", skeleton.get("__ndarray__"))
        if key not in tensors:
            raise StateError(f"{where}: the state refers to a tensor {key!r} that the file does not hold")
        if "__ndarray__" in skeleton:
            return tensors[key].numpy().astype(np.dtype(str(skeleton["dtype"])))
        return tensors[key]
    if "__tuple__" in skeleton:
        return tuple(join_state(v, tensors, where) for v in skeleton["__tuple__"])
    if "__items__" in skeleton:
        return {k: join_state(v, tensors, where) for k, v in skeleton["__items__"]}
    return {k: join_state(v, tensors, where) for k, v in skeleton.items()}


def save_tensors_state(path: Path, state) -> None:
    tensors: dict[str, torch.Tensor] = {}
    skeleton = json.dumps(split_state(state, tensors))
    write_state_dict(path, tensors, metadata={SKELETON: skeleton}, overwrite=True)


def load_tensors_state(path: Path):
    from safetensors import safe_open

    if not path.is_file():
        raise StateError(f"cannot resume: {path} is missing (the checkpoint is incomplete)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        skeleton = json.loads(metadata[SKELETON])
    except Exception as err:  # safetensors' own errors, a missing or non-JSON skeleton
        raise StateError(f"cannot resume: {path} is not a readable training-state file ({err})") from None
    return join_state(skeleton, tensors, path)


def save_json_state(path: Path, state) -> None:
    tensors: dict[str, torch.Tensor] = {}
    skeleton = split_state(state, tensors)
    if tensors:
        raise TypeError(f"{path.name}: JSON state cannot hold tensors")
    text = json.dumps(skeleton, indent=1)
    write_atomic(path, lambda tmp: tmp.write_text(text), overwrite=True)


def load_json_state(path: Path):
    if not path.is_file():
        raise StateError(f"cannot resume: {path} is missing (the checkpoint is incomplete)")
    try:
        return join_state(json.loads(path.read_text()), {}, path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StateError(f"cannot resume: {path} is not valid JSON ({err})") from None


# --- RNG ----------------------------------------------------------------------------------------------------------

def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, where: Path) -> None:
    try:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        np.random.set_state(tuple(state["numpy"]))
        torch.set_rng_state(state["torch"].to(torch.uint8))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in state["cuda"]])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise StateError(f"cannot resume: {where} holds no valid RNG state ({err})") from None


# --- the checkpoint folder -------------------------------------------------------------------------------------------

def refuse_pickles(folder: Path) -> None:
    """Refuse, before opening anything, a checkpoint folder that holds files able to run code when loaded."""
    found = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if found:
        raise StateError(
            f"cannot resume from {folder}: it holds {', '.join(found)}, in a pickle format that can run code when "
            "loaded; this trainer resumes only from its own safetensors/JSON checkpoints and does not open them "
            "(resume from a checkpoint written by this version, or start a new run)")


def save_training_state(folder: Path, accelerator, model, optimizer, scheduler, ema) -> None:
    """Every process writes its RNG state; the main process writes the shared state, each tensor streamed from
    the live model and optimizer (no copy of either is made). Only the trained parameters are saved: frozen ones
    (a LoRA run's base UNet) come back from the base model when the run resumes."""
    folder.mkdir(parents=True, exist_ok=True)
    save_tensors_state(folder / f"rng_{accelerator.process_index}.safetensors", rng_state())
    if not accelerator.is_main_process:
        return
    write_state_dict(folder / "model.safetensors", trained_state(accelerator.unwrap_model(model)), overwrite=True)
    save_tensors_state(folder / "optimizer.safetensors", optimizer.state_dict())
    save_json_state(folder / "scheduler.json", {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"})
    if ema is not None:
        save_tensors_state(folder / "ema.safetensors", ema.state_dict())
    if getattr(accelerator, "scaler", None) is not None:
        save_json_state(folder / "scaler.json", accelerator.scaler.state_dict())


def trained_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state entries a checkpoint holds: every trained parameter and every buffer (live tensors, no copies)."""
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    return {k: v for k, v in model.state_dict(keep_vars=True).items() if k not in frozen}


def load_weights_into(model: torch.nn.Module, path: Path) -> None:
    """Copy the tensors of ``path`` into ``model``'s trained entries one at a time (no second copy of the model);
    the file must hold exactly those entries, with their shapes."""
    from safetensors import safe_open

    if not path.is_file():
        raise StateError(f"cannot resume: {path} is missing")
    expected = trained_state(model)
    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = set(handle.keys())
            missing, unexpected = sorted(set(expected) - keys), sorted(keys - set(expected))
            if missing or unexpected:
                raise StateError(f"cannot resume from {path.parent}: its model state does not fit this run "
                                 f"({len(missing)} missing e.g. {missing[:3]}, {len(unexpected)} unexpected e.g. "
                                 f"{unexpected[:3]})")
            with torch.no_grad():
                for key, target in expected.items():
                    value = handle.get_tensor(key)
                    if value.shape != target.shape:
                        raise StateError(f"cannot resume from {path.parent}: `{key}` has shape "
                                         f"{tuple(value.shape)}, this run's has {tuple(target.shape)}")
                    target.copy_(value)
                    del value
    except StateError:
        raise
    except Exception as err:  # safetensors' own errors for damaged files
        raise StateError(f"cannot resume: {path} is not readable ({err})") from None


def load_training_state(folder: Path, accelerator, model, optimizer, scheduler, ema) -> None:
    """Restore what :func:`save_training_state` wrote; refuses pickle files and names any missing or bad file."""
    refuse_pickles(folder)
    load_weights_into(accelerator.unwrap_model(model), folder / "model.safetensors")
    try:
        optimizer.load_state_dict(load_tensors_state(folder / "optimizer.safetensors"))
        schedule = load_json_state(folder / "scheduler.json")
        schedule["lr_lambdas"] = [None] * len(scheduler.lr_lambdas)
        scheduler.load_state_dict(schedule)
        if ema is not None:
            ema.load_state_dict(load_tensors_state(folder / "ema.safetensors"))
        if getattr(accelerator, "scaler", None) is not None:
            accelerator.scaler.load_state_dict(load_json_state(folder / "scaler.json"))
    except StateError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as err:  # wrong shapes, keys or types in a readable file
        raise StateError(f"cannot resume from {folder}: its state does not fit this run ({err})") from None
    rng = folder / f"rng_{accelerator.process_index}.safetensors"
    if rng.is_file():
        set_rng_state(load_tensors_state(rng), rng)
    else:
        log.warning("%s is missing (the run had fewer processes): this process's RNG starts afresh", rng.name)


def read_trainer_json(folder: Path) -> dict:
    path = folder / "trainer.json"
    state = load_json_state(path)
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) or isinstance(state["step"], bool):
        raise StateError(f"cannot resume: {path} must be a JSON object with an integer `step`, got {str(state)[:80]}")
    return state

