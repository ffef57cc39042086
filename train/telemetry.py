"""What a run reports: a progress bar, every loss term separately, validation metrics and depth images.

Scalars go to every configured accelerate tracker (TensorBoard by default; ``wandb`` when listed and installed);
images go to TensorBoard. Only the main process reports.
"""

from __future__ import annotations

import logging

import torch

from fiffdepth_core.method import colorize

from .config import flatten

log = logging.getLogger(__name__)

LOSS_TERMS = ("total", "d0_mae", "d0_gm", "keep", "dm1_mae", "dm1_gm")


class Telemetry:
    def __init__(self, accelerator, config: dict, start_step: int):
        self.accelerator = accelerator
        self.every = config["train"]["log_every"]
        self.log_images = config["validation"]["log_images"]
        self.bar = None
        if accelerator.is_main_process:
            if config["train"]["trackers"]:
                hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                           for k, v in flatten(config).items()}
                accelerator.init_trackers("fiffdepth", config=hparams)
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=config["train"]["max_steps"], initial=start_step, desc="FiffDepth train",
                                unit="step", dynamic_ncols=True)
            except ImportError:
                self.bar = None

    def step(self, step: int, terms: dict) -> None:
        if not self.accelerator.is_main_process:
            return
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{terms['total']:.4f}", lr=f"{terms['lr']:.2e}")
        if step % self.every == 0 or step == 1:
            values = {f"loss/{k}": terms[k] for k in LOSS_TERMS if k in terms}
            values.update({"train/lr": terms["lr"], "train/skipped_samples": terms.get("skipped", 0),
                           "perf/step_seconds": terms["step_seconds"]})
            if "grad_norm" in terms:
                values["train/grad_norm"] = terms["grad_norm"]
            if torch.cuda.is_available():
                values["perf/peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
            self.accelerator.log(values, step=step)
            log.debug("step %d: %s", step, values)

    def validation(self, step: int, metrics: dict, items, depths: list[torch.Tensor]) -> None:
        log.info("step %d validation: AbsRel %.4f, delta1 %.4f over %d images", step, metrics["abs_rel"],
                 metrics["delta1"], metrics["images"])
        self.accelerator.log({"val/abs_rel": metrics["abs_rel"], "val/delta1": metrics["delta1"]}, step=step)
        if not self.log_images:
            return
        try:
            writer = self.accelerator.get_tracker("tensorboard", unwrap=True)
        except (ValueError, KeyError, AttributeError):
            return
        if not hasattr(writer, "add_image"):
            return
        for item, depth in list(zip(items, depths))[: self.log_images]:
            writer.add_image(f"val/{item.name}/depth", colorize(depth[None])[0], step)
            writer.add_image(f"val/{item.name}/rgb", item.rgb, step)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.accelerator.is_main_process:
            for tracker in self.accelerator.trackers:
                tracker.finish()
