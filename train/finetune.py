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

if not __package__:  # started as `python train/<script>.py`: see train/script_root.py
    import script_root  # noqa: F401

import torch

from fiffdepth_core.losses import LossWeights, sd2_alphas_cumprod
from fiffdepth_core.predictor import PredictConfig
from fiffdepth_core.runtime import DTYPES
from train.config import flatten, load_config
from train.models import build_models, trainable_setup
from train.objective import FiffDepthObjective, encode_batch
from train.run_folder import RunFolder, export_model
from train.telemetry import Telemetry
from train.validation import build_validation, validate

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


def train(config: dict, args, accelerator, run: RunFolder) -> dict:
    tcfg, ocfg = config["train"], config["optim"]
    datasets = build_datasets(config)
    val_items = build_validation(config["validation"]["dataset"], config["data"]["size"],
                                 config["validation"]["max_images"]) if accelerator.is_main_process else []
    unet, vae, embed, base_dir = build_models(config, run.path, accelerator)
    weights = LossWeights(**{k: config["loss"][k] for k in ("mae", "gm", "keep", "gamma", "gm_scales")})
    objective = FiffDepthObjective(unet, vae, embed, sd2_alphas_cumprod(), weights,
                                   config["loss"]["detach_filter_input"])
    optimizer = torch.optim.AdamW(unet.parameters(), lr=ocfg["lr"], betas=tuple(ocfg["betas"]), eps=ocfg["eps"],
                                  weight_decay=ocfg["weight_decay"])
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(ocfg))  # stepped once per optimizer step
    ema = trainable_setup(unet, tcfg, accelerator)
    objective, optimizer = accelerator.prepare(objective, optimizer)
    parts = (objective, optimizer, schedule, ema)  # the training state a checkpoint holds
    vae.to(accelerator.device)
    if accelerator.is_main_process and not args.resume:
        run.record(config)  # the config validated and the models built: the folder now holds this run
    accelerator.wait_for_everyone()
    state = {"best_abs_rel": math.inf, "best_step": None}
    if args.resume:
        checkpoint = run.resolve(args.resume)
        run.set_aside_later(checkpoint, accelerator)
        state = run.load(accelerator, checkpoint, parts)
        if ema is not None:
            ema.to(accelerator.device)  # the state is read onto the CPU
        log.info("resumed from step %d", state["step"])
    start, accum = state.get("step", 0), tcfg["grad_accum"]
    synthetic_loader, real_loader = build_loaders(config, datasets, accelerator, start * accum)
    val_config = PredictConfig(processing_resolution=config["validation"]["processing_resolution"])
    plain = accelerator.unwrap_model(objective)
    telemetry = Telemetry(accelerator, config, start)
    step, history = start, []
    synthetic_iter, real_iter = iter(synthetic_loader), iter(real_loader)
    try:
        while step < tcfg["max_steps"]:
            began, sums = time.perf_counter(), {}
            for micro in range(accum):
                synthetic, real = next(synthetic_iter), next(real_iter)
                generator = micro_generator(tcfg["seed"], step * accum + micro, accelerator.process_index)
                batch = encode_batch(plain.backbone(), synthetic, real, generator)
                context = accelerator.no_sync(objective) if micro < accum - 1 else contextlib.nullcontext()
                with context:
                    out = objective(batch)
                    accelerator.backward(out["total"] / accum)
                for key, value in out.items():  # summed on the device: one sync per step, not per term
                    sums[key] = sums.get(key, 0.0) + value.detach().float() / accum
                sums["skipped"] = sums.get("skipped", 0) + synthetic["skipped"].sum() + real["skipped"].sum()
            terms = {key: value.item() for key, value in sums.items()}
            if ocfg["max_grad_norm"]:
                terms["grad_norm"] = float(accelerator.clip_grad_norm_(unet.parameters(), ocfg["max_grad_norm"]))
            terms["lr"] = optimizer.param_groups[0]["lr"]  # the rate this step uses (the schedule steps after it)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            schedule.step()
            if ema is not None:
                ema.step(unet.parameters())
            step += 1
            terms["step_seconds"] = time.perf_counter() - began
            history.append(terms["total"])
            telemetry.step(step, terms)
            if step % config["validation"]["every"] == 0 or step == tcfg["max_steps"]:
                state = _validate_and_keep_best(plain, val_items, val_config, state, step, telemetry, ema, unet,
                                                config, run, base_dir, accelerator)
            if step % tcfg["checkpoint_every"] == 0 or step == tcfg["max_steps"]:
                run.save(accelerator, step, state, tcfg["keep_checkpoints"], parts)
    except KeyboardInterrupt:
        if not run.has(step):
            log.warning("interrupted at step %d: saving a checkpoint before exiting", step)
            run.save(accelerator, step, state, tcfg["keep_checkpoints"], parts)
        raise
    finally:
        telemetry.close()
    if accelerator.is_main_process:
        with _ema_weights(ema, unet):
            export_model(unet, vae, plain.empty_embed, run.path / "export", base_dir,
                         config["export"]["single_file"], DTYPES[config["export"]["dtype"]])
    accelerator.wait_for_everyone()
    return {"losses": history, "state": state}


def _validate_and_keep_best(plain, items, val_config, state, step, telemetry, ema, unet, config, run, base_dir,
                            accelerator) -> dict:
    if accelerator.is_main_process and items:
        unet.eval()
        with _ema_weights(ema, unet):
            metrics, depths = validate(plain.backbone(), items, val_config)
            telemetry.validation(step, metrics, items, depths)
            if metrics["abs_rel"] < state["best_abs_rel"]:
                state = {**state, "best_abs_rel": metrics["abs_rel"], "best_step": step}
                export_model(unet, plain._vae[0], plain.empty_embed, run.path / "best", None, False,
                             DTYPES[config["export"]["dtype"]])  # the embedding is in it; no text encoder copy
        unet.train()
    accelerator.wait_for_everyone()
    return state


class _ema_weights:
    """Temporarily swap the EMA weights into the UNet (a no-op without EMA)."""

    def __init__(self, ema, unet):
        self.ema, self.params = ema, list(unet.parameters())

    def __enter__(self):
        if self.ema is not None:
            self.ema.store(self.params)
            self.ema.copy_to(self.params)

    def __exit__(self, *exc):
        if self.ema is not None:
            self.ema.restore(self.params)
        return False


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("diffusers", "transformers", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config = load_config(args.config, args.overrides)
    from accelerate import Accelerator

    tcfg = config["train"]
    run = RunFolder(args.output_dir)
    accelerator = Accelerator(mixed_precision=tcfg["mixed_precision"], log_with=tcfg["trackers"] or None,
                              project_dir=str(run.path / "logs"))
    try:
        if accelerator.is_main_process:
            run.lock()  # held until this process ends: a second run on the folder stops here
            run.check(config, resuming=bool(args.resume))
        accelerator.wait_for_everyone()
        torch.manual_seed(tcfg["seed"])
        log.info("config:\n%s", "\n".join(f"  {k} = {v}" for k, v in flatten(config).items()))
        return train(config, args, accelerator, run)
    finally:
        run.unlock()
        accelerator.end_training()  # also tears down the process group of a multi-process run


if __name__ == "__main__":
    from train.run_folder import RunFolderError

    try:
        main()
    except (FileNotFoundError, FileExistsError, ValueError, RunFolderError, OSError) as error:
        log.debug("traceback", exc_info=True)  # in the log at --log-level DEBUG
        log.error("%s", error)
        sys.exit(2)
