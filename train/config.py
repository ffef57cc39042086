"""Training configs: YAML files with a ``base_config`` merge, ``${ENV}`` expansion and up-front validation.

A config is a plain nested dict. ``load_config`` reads a file, merges its ``base_config`` list (paths relative to
the file) underneath it, expands ``${VAR}`` in strings (data roots come from the environment or flags, never
from the committed YAML), applies ``--set key.sub=value`` overrides, fills defaults and checks every field, so
a bad config fails before any model loads. The resolved config is saved with each run.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import asdict
from pathlib import Path

import yaml

from fiffdepth_core.method import DTYPES, LossWeights

from .config_schema import check_list, check_optional, check_types, is_number, load_yaml, unknown_keys

# The recipe (docs/method.md), in one place: experiment configs (train/configs/) state only what differs from it.
# The loss weights are the paper's (fiffdepth_core.method.losses.LossWeights); the schedule is Marigold/E2E-FT's (AdamW 3e-5,
# 100 warm-up steps, exponential decay to 1 % at 20K steps); 2 images per sub-batch x 8 accumulated micro-steps x 2
# sub-batches = 32 images per optimizer step on one GPU; bf16 autocast with an fp32 UNet; 480x640 crops.
DEFAULTS = {
    "model": {"pretrained": None, "random_geometry": None, "seed": 0,
              "vae_warmup": {"steps": 0, "batch_size": 4, "lr": 2.0e-3, "seed": 0}},
    "data": {"size": [480, 640], "hflip": True, "num_workers": 2, "synthetic": [], "real": []},
    "validation": {"every": 500, "dataset": None, "processing_resolution": 0, "max_images": 80, "log_images": 4},
    "loss": {**asdict(LossWeights()), "detach_filter_input": False},
    "optim": {"lr": 3.0e-5, "weight_decay": 1.0e-2, "betas": [0.9, 0.999], "eps": 1.0e-8, "warmup_steps": 100,
              "decay_steps": 20000, "final_lr_fraction": 0.01, "max_grad_norm": 1.0},
    "train": {"max_steps": 20000, "batch_size": 2, "grad_accum": 8, "mixed_precision": "bf16",
              "vae_dtype": "bf16", "gradient_checkpointing": True, "optimizer": "adamw",
              "ema": {"enabled": False, "decay": 0.9999, "on_cpu": False},
              "lora": {"enabled": False, "rank": 32, "alpha": 32.0,
                       "target_modules": ["to_q", "to_k", "to_v", "to_out.0"]},
              "seed": 1234, "checkpoint_every": 1000, "keep_checkpoints": 3, "log_every": 10,
              "trackers": ["tensorboard"]},
    "export": {"single_file": False, "dtype": "fp32"},
}

# Keys that may change when a run is resumed (run control, not the experiment).
RESUMABLE_KEYS = {"train.max_steps", "train.checkpoint_every", "train.keep_checkpoints", "train.log_every",
                  "train.trackers", "validation.every", "validation.max_images", "validation.log_images",
                  "data.num_workers", "export.single_file", "export.dtype", "train.ema.on_cpu"}
MIXED_PRECISIONS = ("no", "fp16", "bf16")  # accelerate's autocast choices for train.mixed_precision
OPTIMIZERS = ("adamw", "adamw8bit")  # torch's AdamW; bitsandbytes' 8-bit AdamW (pip install bitsandbytes)
DTYPE_NAMES = tuple(DTYPES)  # train.vae_dtype, export.dtype


class ConfigError(ValueError):
    """A config value is missing or out of range; the message names the key."""


def _is_spec(value) -> bool:
    """Dataset specs are atomic: an override replaces them whole instead of merging into them."""
    return isinstance(value, dict) and ("type" in value or "eval_set" in value)


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        mergeable = isinstance(value, dict) and isinstance(out.get(key), dict) and not _is_spec(value)
        out[key] = _merge(out[key], value) if mergeable else copy.deepcopy(value)
    return out


def _read(path: Path, seen: tuple = ()) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in seen:
        raise ConfigError(f"config {path} includes itself through base_config")
    try:
        data = load_yaml(path.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read config {path}: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level, got {type(data).__name__}")
    merged: dict = {}
    for base in data.pop("base_config", []) or []:
        merged = _merge(merged, _read((path.parent / base).resolve(), seen + (path.resolve(),)))
    return _merge(merged, data)


def _expand(value, where: str = ""):
    if isinstance(value, dict):
        return {k: _expand(v, f"{where}.{k}" if where else k) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str):
        for name in re.findall(r"\$\{(\w+)\}", value):
            if name not in os.environ:
                raise ConfigError(f"`{where}` uses ${{{name}}} but the environment variable {name} is not set")
        return os.path.expandvars(value)
    return value


def apply_override(config: dict, assignment: str) -> None:
    """``key.sub=value`` (value parsed as YAML) -> config[key][sub] = value."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key.sub=value, got {assignment!r}")
    dotted, raw = assignment.split("=", 1)
    *parents, leaf = dotted.strip().split(".")
    node = config
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: `{key}` is not a section")
    try:
        node[leaf] = load_yaml(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {dotted}: the value {raw!r} is not valid YAML ({' '.join(str(err).split())})") \
            from None


def flatten(config: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else key
        out.update(flatten(value, name) if isinstance(value, dict) else {name: value})
    return out


def _need(condition: bool, key: str, allowed: str, value) -> None:
    if not condition:
        raise ConfigError(f"`{key}` must be {allowed}, got {value!r}")


def check_schema(config: dict) -> None:
    """Every value has its default's type; keys whose default is null or a list are checked one by one."""
    problems = check_types(config, DEFAULTS)
    problems += check_optional(config, "model.pretrained", (str,), "a folder or hub id, or null")
    problems += check_optional(config, "model.random_geometry", (str,), "tiny, sd2 or null")
    problems += check_optional(config, "validation.dataset", (dict,), "null or a dataset spec")
    if not problems:
        o, t = config["optim"], config["train"]
        problems += check_list(o["betas"], "optim.betas", 2, lambda b: is_number(b) and 0 <= b < 1,
                               "[beta1, beta2], numbers in [0, 1)")
        problems += check_list(t["trackers"], "train.trackers", None, lambda x: isinstance(x, str),
                               "a list of tracker names, e.g. [tensorboard] (or [])")
        for key, low in (("optim.eps", 0.0), ("optim.weight_decay", 0.0), ("optim.max_grad_norm", 0.0),
                         ("data.num_workers", 0), ("loss.gm_scales", 1), ("validation.log_images", 0)):
            section, leaf = key.split(".")
            value = config[section][leaf]
            if value < low or (key == "optim.eps" and value <= 0) or (key == "loss.gm_scales" and value > 8):
                problems.append(f"`{key}` must be {'> 0' if key == 'optim.eps' else f'>= {low}'}"
                                f"{' and <= 8' if key == 'loss.gm_scales' else ''}, got {value!r}")
    if problems:
        raise ConfigError("; ".join(problems))


def check_config(config: dict) -> dict:
    """Every value of a merged config in range, or a ConfigError naming the key; returns ``config``."""
    check_schema(config)
    model, data, train = config["model"], config["data"], config["train"]
    optim, validation, loss = config["optim"], config["validation"], config["loss"]
    _need(bool(model["pretrained"]) != bool(model["random_geometry"]), "model.pretrained / model.random_geometry",
          "exactly one of: a diffusers SD2 folder or hub id / a random geometry (tiny, sd2)",
          (model["pretrained"], model["random_geometry"]))
    _need(model["random_geometry"] in (None, "tiny", "sd2"), "model.random_geometry", "tiny, sd2 or null",
          model["random_geometry"])
    size = data["size"]
    _need(isinstance(size, list) and len(size) == 2 and all(isinstance(x, int) and x > 0 and x % 8 == 0 for x in size),
          "data.size", "[height, width], positive multiples of 8", size)
    for branch in ("synthetic", "real"):
        specs = data[branch]
        _need(isinstance(specs, list) and len(specs) > 0 and all(isinstance(s, dict) and "type" in s for s in specs),
              f"data.{branch}", "a non-empty list of dataset specs with a `type`", specs)
    for key in ("max_steps", "batch_size", "grad_accum", "checkpoint_every", "log_every", "keep_checkpoints"):
        _need(isinstance(train[key], int) and train[key] >= 1, f"train.{key}", "an integer >= 1", train[key])
    _need(train["mixed_precision"] in MIXED_PRECISIONS, "train.mixed_precision", f"one of {MIXED_PRECISIONS}",
          train["mixed_precision"])
    _need(train["optimizer"] in OPTIMIZERS, "train.optimizer", f"one of {OPTIMIZERS}", train["optimizer"])
    lora = train["lora"]
    _need(isinstance(lora["rank"], int) and lora["rank"] >= 1, "train.lora.rank", "an integer >= 1", lora["rank"])
    _need(lora["alpha"] > 0, "train.lora.alpha", "a positive number", lora["alpha"])
    _need(len(lora["target_modules"]) > 0 and all(isinstance(m, str) and m for m in lora["target_modules"]),
          "train.lora.target_modules", "a non-empty list of module names (e.g. [to_q, to_k, to_v, to_out.0])",
          lora["target_modules"])
    _need(train["vae_dtype"] in DTYPE_NAMES, "train.vae_dtype", f"one of {DTYPE_NAMES}", train["vae_dtype"])
    _need(isinstance(optim["lr"], (int, float)) and optim["lr"] > 0, "optim.lr", "a positive number", optim["lr"])
    _need(0 <= optim["warmup_steps"] < optim["decay_steps"], "optim.warmup_steps", "in [0, optim.decay_steps)",
          optim["warmup_steps"])
    _need(0 < optim["final_lr_fraction"] <= 1, "optim.final_lr_fraction", "in (0, 1]", optim["final_lr_fraction"])
    _need(isinstance(validation["every"], int) and validation["every"] >= 1, "validation.every", "an integer >= 1",
          validation["every"])
    _need(isinstance(optim["decay_steps"], int), "optim.decay_steps", "an integer", optim["decay_steps"])
    _need(0 <= loss["gamma"] <= 1, "loss.gamma", "in [0, 1]", loss["gamma"])
    for key in ("mae", "gm", "keep"):
        _need(isinstance(loss[key], (int, float)) and loss[key] >= 0, f"loss.{key}", "a number >= 0", loss[key])
    _need(0 < train["ema"]["decay"] < 1, "train.ema.decay", "in (0, 1)", train["ema"]["decay"])
    _need(config["export"]["dtype"] in DTYPE_NAMES, "export.dtype", f"one of {DTYPE_NAMES}", config["export"]["dtype"])
    _need(isinstance(validation["max_images"], int) and validation["max_images"] >= 1, "validation.max_images",
          "an integer >= 1", validation["max_images"])
    spec = validation["dataset"]
    _need(spec is None or (isinstance(spec, dict) and (spec.get("type") == "procedural" or
                                                       ("eval_set" in spec and "data_root" in spec))),
          "validation.dataset", "null, {type: procedural, ...} or {eval_set: NAME, data_root: DIR, ...}", spec)
    from fiffdepth_core.method import PredictConfig

    try:
        PredictConfig(processing_resolution=validation["processing_resolution"])
    except (TypeError, ValueError) as error:
        raise ConfigError(f"validation.{error}") from None
    return config


def load_config(path: str | Path, overrides: list[str] = ()) -> dict:
    """Read, merge, expand, override, default and validate a training config."""
    config = _read(Path(path))
    for assignment in overrides:
        apply_override(config, assignment)
    unknown = unknown_keys(config, DEFAULTS)
    if unknown:
        raise ConfigError("; ".join(unknown))
    return check_config(_merge(DEFAULTS, _expand(config)))


def config_differences(saved: dict, current: dict) -> list[str]:
    """Experiment keys whose values differ between a run's saved config and ``current`` (a key the saved config
    lacks, written by an older version, counts as its default)."""
    a, b = flatten(_merge(DEFAULTS, saved)), flatten(current)
    return sorted(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in set(a) | set(b)
                  if k not in RESUMABLE_KEYS and a.get(k) != b.get(k))
