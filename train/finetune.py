"""Fine-tune Stable Diffusion 2 into FiffDepth with the paper's full objective, on one GPU or many.

    python train/finetune.py --config train/configs/fiffdepth_sd2.yaml --output-dir RUN
    accelerate launch --num_processes 8 train/finetune.py --config ... --output-dir RUN
    python train/finetune.py --config ... --output-dir RUN --resume latest

Every optimizer step sees ``grad_accum`` micro-steps, each with a synthetic and a real sub-batch of
``train.batch_size`` images per process: t = 0 latent MAE + gradient matching on synthetic GT, trajectory keeping
(v-prediction on noised image/depth blends) on the same images, and the t = -1 filter against teacher targets on
real photos (docs/method.md). Data order, timesteps and noise are pure functions of (seed, step, rank), so a resumed
run continues exactly. The final model is exported to RUN/export in the official diffusers layout.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if not __package__:  # started as `python train/<script>.py`: see train/script_root.py
    import script_root  # noqa: F401

import torch

from fiffdepth_core.method import DTYPES, LossWeights, PredictConfig, sd2_alphas_cumprod
from train.config import flatten, load_config
from train.ema import ema_step, ema_weights
from train.memory import PhaseMeter, log_budget, memory_budget
from train.models import build_models, make_optimizer, trainable_setup
from train.objective import FiffDepthObjective, encode_batch
from train.run_folder import RunFolder, export_model, export_sources
from train.telemetry import Telemetry
from train.validation import build_validation, run_validation

log = logging.getLogger("fiffdepth.train")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="YAML experiment config (see train/configs/)")
    parser.add_argument("--output-dir", required=True, help="run folder: config, checkpoints, logs, export")
    parser.add_argument("--resume", default=None, help="'latest' or a checkpoint folder of this run")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.max_steps=100 (repeatable)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING"))
    return parser.parse_args(argv)


def micro_generator(seed: int, micro_step: int, rank: int) -> torch.Generator:
    """The RNG for one micro-step's timesteps and noise: a pure function of (seed, micro-step, rank)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + micro_step * 8_191 + rank * 131) % (2**63 - 1))


def build_datasets(config: dict) -> dict:
    """Every training dataset, constructed (and so checked) before any model loads."""
    from train.datasets import build_dataset

    data = config["data"]
    return {branch: [build_dataset(s, tuple(s.get("size", data["size"])), data["hflip"]) for s in data[branch]]
            for branch in ("synthetic", "real")}


def build_loaders(config: dict, datasets: dict, accelerator, start_micro: int):
    """Deterministic, resumable loaders (synthetic, real) starting at micro-step ``start_micro``."""
    from train.datasets.sampling import build_loader

    data, train = config["data"], config["train"]
    loaders = []
    for offset, branch in enumerate(("synthetic", "real")):
        weights = [float(s.get("probability", 1.0)) for s in data[branch]]
        loaders.append(build_loader(datasets[branch], [w / sum(weights) for w in weights], train["batch_size"],
                                    train["seed"] + offset, train["max_steps"] * train["grad_accum"],
                                    start_step=start_micro, rank=accelerator.process_index,
                                    world_size=accelerator.num_processes, num_workers=data["num_workers"],
                                    pin_memory=torch.cuda.is_available()))
    return loaders


def lr_factor(optim: dict):
    """Linear warm-up, then exponential decay to ``final_lr_fraction`` at ``decay_steps`` (then constant)."""
    warmup, decay, final = optim["warmup_steps"], optim["decay_steps"], optim["final_lr_fraction"]

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return final ** (min(step - warmup, decay - warmup) / (decay - warmup))

    return factor


@dataclass
class Training:
    """Everything a run trains with, built once by :func:`setup` and read by the loop."""

    config: dict
    accelerator: object
    run: RunFolder
    unet: torch.nn.Module  # the trainable UNet (also inside ``objective``)
    trainable: list  # the parameters the optimizer trains (all of the UNet's, or the LoRA adapters')
    vae: torch.nn.Module  # frozen
    base_dir: Path | None  # the base model's folder: its text encoder and tokenizer are copied into the export
    objective: torch.nn.Module  # as prepared by accelerate (DDP-wrapped on several processes)
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    ema: object | None  # diffusers EMAModel, or None
    checkpointed: tuple  # the training state a checkpoint holds
    datasets: dict
    validation_items: list
    validation_config: PredictConfig
    state: dict  # best_abs_rel, best_step, step (after a resume)
    unwrapped: FiffDepthObjective  # the objective without accelerate's wrapper: backbone and embedding
    meter: PhaseMeter  # peak memory per phase

    @property
    def export_dtype(self) -> torch.dtype:
        return DTYPES[self.config["export"]["dtype"]]


def latent_sizes(config: dict, datasets: dict) -> dict[str, tuple[int, int]]:
    """The largest latent (h, w) each branch feeds the UNet (datasets may have their own crop size)."""
    def size(d):
        return tuple(getattr(d, "size", None) or config["data"]["size"])

    return {branch: max(((h // 8, w // 8) for h, w in map(size, found)), key=lambda hw: hw[0] * hw[1])
            for branch, found in datasets.items()}


def single_process(accelerator) -> bool:
    """Whether the run is one process (no DistributedDataParallel): the UNet passes then run on leaves of their own."""
    return accelerator.num_processes == 1


def setup(config: dict, args, accelerator, run: RunFolder, meter: PhaseMeter) -> Training:
    """Data, models, objective, optimizer, schedule and EMA, prepared for ``accelerator``; resumed if asked."""
    train_settings, optim_settings, loss_settings = config["train"], config["optim"], config["loss"]
    datasets = build_datasets(config)
    validation_items = build_validation(config["validation"]["dataset"], config["data"]["size"],
                                        config["validation"]["max_images"]) if accelerator.is_main_process else []
    unet, vae, embed, base_dir = build_models(config, run.path, accelerator)
    weights = LossWeights(**{name: loss_settings[name] for name in ("mae", "gm", "keep", "gamma", "gm_scales")})
    objective = FiffDepthObjective(unet, vae, embed, sd2_alphas_cumprod(), weights,
                                   loss_settings["detach_filter_input"], leaf_per_pass=single_process(accelerator))
    trainable, ema = trainable_setup(unet, train_settings, accelerator)
    optimizer = make_optimizer(trainable, optim_settings, train_settings["optimizer"])
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(optim_settings))  # once per optimizer step
    if accelerator.is_main_process:
        log_budget(memory_budget(unet, vae, config, trainable, accelerator.device, latent_sizes(config, datasets),
                                 leaf_per_pass=single_process(accelerator)), accelerator.device)
    objective, optimizer = accelerator.prepare(objective, optimizer)
    checkpointed = (objective, optimizer, schedule, ema)
    vae.to(accelerator.device)
    if accelerator.is_main_process and not args.resume:
        run.record(config)  # the config validated and the models built: the folder now holds this run
    accelerator.wait_for_everyone()
    state = {"best_abs_rel": math.inf, "best_step": None}
    if args.resume:
        checkpoint = run.resolve(args.resume)
        run.set_aside_later(checkpoint, accelerator)
        state = run.load(accelerator, checkpoint, checkpointed)
        if ema is not None and not train_settings["ema"]["on_cpu"]:
            ema.to(accelerator.device)  # the state is read onto the CPU
        log.info("resumed from step %d", state["step"])
    validation_config = PredictConfig(processing_resolution=config["validation"]["processing_resolution"])
    return Training(config, accelerator, run, unet, trainable, vae, base_dir, objective, optimizer, schedule, ema,
                    checkpointed, datasets, validation_items, validation_config, state,
                    accelerator.unwrap_model(objective), meter)


def export(training: Training, name: str, with_text_encoder: bool, single_file: bool) -> None:
    """The current (EMA) weights to RUN/<name>, streamed (see :func:`train.run_folder.export_sources`)."""
    with training.meter.phase("export"), ema_weights(training.ema, training.trainable):
        unet, vae, lora = export_sources(training.unet, training.vae, training.base_dir, training.config)
        export_model(unet, vae, training.unwrapped.empty_embed, training.run.path / name,
                     training.base_dir if with_text_encoder else None, single_file, training.export_dtype, lora)


def train(config: dict, args, accelerator, run: RunFolder) -> dict:
    """Set up, run the optimizer steps, export the final (EMA) weights to RUN/export."""
    meter = PhaseMeter(accelerator.device)
    with meter.phase("load"):
        training = setup(config, args, accelerator, run, meter)
    history = training_loop(training)
    if accelerator.is_main_process:
        export(training, "export", True, config["export"]["single_file"])
        meter.log()
    accelerator.wait_for_everyone()
    return {"losses": history, "state": training.state, "memory": meter.summary()}


def training_loop(training: Training) -> list[float]:
    """Optimizer steps from the resumed step to ``train.max_steps``, validating and checkpointing on schedule;
    returns the total loss of every step. Ctrl-C saves a checkpoint before leaving."""
    config, accelerator, run = training.config, training.accelerator, training.run
    train_settings = config["train"]
    step = training.state.get("step", 0)
    synthetic_loader, real_loader = build_loaders(config, training.datasets, accelerator,
                                                  step * train_settings["grad_accum"])
    telemetry = Telemetry(accelerator, config, step)
    batches = (iter(synthetic_loader), iter(real_loader))
    history = []
    try:
        while step < train_settings["max_steps"]:
            began = time.perf_counter()
            with training.meter.phase("train"):
                terms = optimizer_step(training, step, batches)
            step += 1
            terms["step_seconds"] = time.perf_counter() - began
            history.append(terms["total"])
            telemetry.step(step, terms)
            last = step == train_settings["max_steps"]
            if step % config["validation"]["every"] == 0 or last:
                validate_and_keep_best(training, step, telemetry)
            if step % train_settings["checkpoint_every"] == 0 or last:
                with training.meter.phase("checkpoint"):
                    run.save(accelerator, step, training.state, train_settings["keep_checkpoints"],
                             training.checkpointed)
    except KeyboardInterrupt:
        if not run.has(step):
            log.warning("interrupted at step %d: saving a checkpoint before exiting", step)
            run.save(accelerator, step, training.state, train_settings["keep_checkpoints"], training.checkpointed)
        raise
    finally:
        telemetry.close()
    return history


def optimizer_step(training: Training, step: int, batches) -> dict[str, float]:
    """One optimizer step over ``train.grad_accum`` micro-steps (gradients synchronised on the last one only);
    returns the step's loss terms, gradient norm and learning rate."""
    accelerator, objective = training.accelerator, training.objective
    train_settings, max_grad_norm = training.config["train"], training.config["optim"]["max_grad_norm"]
    accum = train_settings["grad_accum"]
    synthetic_batches, real_batches = batches
    sums = {}
    for micro in range(accum):
        synthetic, real = next(synthetic_batches), next(real_batches)
        generator = micro_generator(train_settings["seed"], step * accum + micro, accelerator.process_index)
        batch = encode_batch(training.unwrapped.backbone(), synthetic, real, generator)
        sync = accelerator.no_sync(objective) if micro < accum - 1 else contextlib.nullcontext()
        with sync:
            losses = objective(batch)
            accelerator.backward(losses["total"] / accum)
        for key, value in losses.items():  # summed on the device: one sync per step, not per term
            sums[key] = sums.get(key, 0.0) + value.detach().float() / accum
        sums["skipped"] = sums.get("skipped", 0) + synthetic["skipped"].sum() + real["skipped"].sum()
    terms = {key: value.item() for key, value in sums.items()}
    if max_grad_norm:
        terms["grad_norm"] = float(accelerator.clip_grad_norm_(training.trainable, max_grad_norm))
    terms["lr"] = training.optimizer.param_groups[0]["lr"]  # the rate this step uses (the schedule steps after it)
    training.optimizer.step()
    training.optimizer.zero_grad(set_to_none=True)
    training.schedule.step()
    if training.ema is not None:
        ema_step(training.ema, training.trainable, training.config["train"]["ema"]["on_cpu"])
    return terms


def validate_and_keep_best(training: Training, step: int, telemetry: Telemetry) -> None:
    """Validate the current (EMA) weights on the main process; a new best AbsRel is exported to RUN/best."""
    accelerator, unet = training.accelerator, training.unet
    if accelerator.is_main_process and training.validation_items:
        unet.eval()
        with training.meter.phase("validate"), ema_weights(training.ema, training.trainable):
            metrics, depths = run_validation(training.unwrapped.backbone(), training.validation_items,
                                             training.validation_config)
            telemetry.validation(step, metrics, training.validation_items, depths)
        if metrics["abs_rel"] < training.state["best_abs_rel"]:
            training.state = {**training.state, "best_abs_rel": metrics["abs_rel"], "best_step": step}
            export(training, "best", False, False)  # the embedding is in it; no text encoder copy
        unet.train()
    accelerator.wait_for_everyone()


def warn_slow_bf16(config: dict, device: torch.device) -> None:
    """bf16 on a CPU without bf16 kernels (AVX2-only x86) runs convolutions ~100x slower than fp32: say so."""
    train = config["train"]
    if device.type != "cpu" or "bf16" not in (train["mixed_precision"], train["vae_dtype"]):
        return
    try:
        fast = torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        fast = False
    if not fast:
        log.warning("this CPU has no bf16 kernels: bf16 (train.mixed_precision / train.vae_dtype) runs about 100x "
                    "slower than fp32 here; set train.mixed_precision=no and train.vae_dtype=fp32 for CPU runs")


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("diffusers", "transformers", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config = load_config(args.config, args.overrides)
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    train_settings = config["train"]
    run = RunFolder(args.output_dir)
    from accelerate.utils import AutocastKwargs

    from fiffdepth_core.app.allocator import return_freed_memory

    accelerator = Accelerator(mixed_precision=train_settings["mixed_precision"],
                              log_with=train_settings["trackers"] or None, project_dir=str(run.path / "logs"))
    if single_process(accelerator):  # each UNet pass on leaves of its own (train/objective.py: own_leaves): autocast
        accelerator.autocast_handler = AutocastKwargs(cache_enabled=False)  # must not cache a copy per leaf
        # (read when the objective is prepared; several processes (DDP) keep autocast's weight cache)
    if argv is None and accelerator.device.type == "cpu" and config["model"].get("random_geometry") != "tiny":
        # a real-size run on the CPU, as the program (not from Python, not in tests, not the tiny quick start):
        return_freed_memory()  # its peak decides whether it fits (fiffdepth_core/app/allocator.py)
    try:
        if accelerator.is_main_process:
            run.lock()  # held until this process ends: a second run on the folder stops here
            run.check(config, resuming=bool(args.resume))
        accelerator.wait_for_everyone()
        torch.manual_seed(train_settings["seed"])
        warn_slow_bf16(config, accelerator.device)
        log.info("config:\n%s", "\n".join(f"  {k} = {v}" for k, v in flatten(config).items()))
        return train(config, args, accelerator, run)
    finally:
        run.unlock()
        # accelerate keeps the mixed precision in process-wide state: forget it, so that a later run in this process
        # (a notebook, the tests) may choose another one. The distributed state (PartialState) stays as it is.
        AcceleratorState._reset_state()
        accelerator.end_training()  # also tears down the process group of a multi-process run


if __name__ == "__main__":
    from train.run_folder import RunFolderError

    try:
        main()
    except (FileNotFoundError, FileExistsError, ValueError, RunFolderError, OSError, ImportError) as error:
        log.debug("traceback", exc_info=True)  # in the log at --log-level DEBUG
        log.error("%s", error)
        sys.exit(2)
