"""The one training loop of both stages, on accelerate.

A stage (:mod:`training.stages`) supplies its modules, data and loss; this loop
does the rest: devices and mixed precision, gradient accumulation, multi-GPU
(``accelerate launch`` or ``torchrun``), gradient checkpointing, AdamW (8-bit
with bitsandbytes), EMA, logging (TensorBoard, W&B, ``metrics.jsonl``), a
progress bar, periodic validation samples, atomic checkpoints, exact resume,
and the final export.

A non-finite loss stops training before the optimiser sees it, with a
:class:`NonFiniteLossError` naming the step; the last good checkpoint stays
the newest one. The main process locks the output folder for the run
(:class:`datasets.output_folder.OutputLock`): a second run on the same folder
stops at once with a message naming the holder's PID and host.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from datasets.damage import DamagedDataError, DamageTally, from_worker
from datasets.output_folder import OutputFolderError, OutputLock
from training import checkpoint as ckpt
from training.config import ConfigError, TrainConfig, save_config
from training.optimizers import make_lr_scheduler, make_optimizer
from training.protocol import Stage
from training.records import METRICS, MetricsFile, flat_config

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped without applying that step."""


@dataclass
class TrainResult:
    """What a finished run leaves behind."""

    output_dir: Path
    global_step: int
    losses: dict[int, float] = field(default_factory=dict)
    """Loss of every optimiser step run by this call, by step number (1-based)."""
    checkpoint: Path | None = None
    export_dir: Path | None = None
    samples: list[Path] = field(default_factory=list)


TRACKERS = {"tensorboard": ["tensorboard"], "wandb": ["wandb"], "all": ["tensorboard", "wandb"], "none": []}


def check_environment(config: TrainConfig) -> None:
    """Refuse, before anything loads, what this machine cannot run: CUDA, fp16 on CPU, W&B, 8-bit Adam."""
    import importlib.util

    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device is 'cuda' but no CUDA device is available (use --device auto or cpu)")
    use_cpu = config.device == "cpu" or not torch.cuda.is_available()
    if config.mixed_precision == "fp16" and use_cpu:
        raise ConfigError("mixed_precision fp16 needs a CUDA device; use bf16 or no on CPU")
    if "wandb" in TRACKERS[config.log.report_to] and importlib.util.find_spec("wandb") is None:
        raise ConfigError("log.report_to asks for W&B but wandb is not installed")
    if config.optim.use_8bit_adam and importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("optim.use_8bit_adam needs bitsandbytes (pip install bitsandbytes) and a GPU")


def make_accelerator(config: TrainConfig):
    """An ``Accelerator`` for ``config`` (device, precision, accumulation, trackers under OUTPUT/logs)."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    check_environment(config)
    use_cpu = config.device == "cpu" or not torch.cuda.is_available()
    log_with = TRACKERS[config.log.report_to]
    output = Path(config.output_dir)
    return Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        cpu=use_cpu,
        log_with=log_with or None,
        project_config=ProjectConfiguration(project_dir=str(output), logging_dir=str(output / "logs")),
    )


class Trainer:
    """Runs one stage with one config; see the module docstring. Use :func:`train`."""

    def __init__(self, config: TrainConfig, stage: Stage) -> None:
        self.config, self.stage = config, stage
        self.output = Path(config.output_dir)
        self.output.mkdir(parents=True, exist_ok=True)
        self.accelerator = make_accelerator(config)
        self.lock = lock_output(self.accelerator, self.output)
        try:
            self.setup()
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Give the output folder back (the main process's lock)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def setup(self) -> None:
        """Resume point, stage, data, optimiser, EMA: everything before the first step."""
        config, stage, accelerator = self.config, self.stage, self.accelerator
        try:
            self.resume_from = ckpt.resolve_resume(
                self.output, config.resume, process_index=accelerator.process_index, set_aside=accelerator.is_main_process
            )
        except ckpt.DamagedCheckpointError as error:
            raise ConfigError(str(error)) from error
        torch.manual_seed(config.seed)  # new modules start from the same weights on every process
        stage.setup(accelerator)
        self.dataset = stage.dataset()
        self.damage = DamageTally(self.dataset)
        self.sampler = stage.batch_sampler(
            len(self.dataset), config.batch_size, rank=accelerator.process_index, world=accelerator.num_processes
        )
        self.loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=self.sampler, num_workers=stage.num_workers, collate_fn=stage.collate,
            pin_memory=accelerator.device.type == "cuda", persistent_workers=False,
        )
        module, self.names = stage.trainable_module(), stage.trainable_names()
        named = dict(module.named_parameters())
        self.params = [named[name] for name in self.names]
        if config.gradient_checkpointing:
            stage.enable_gradient_checkpointing()
        optimizer = make_optimizer(config, self.params)
        self.lr_scheduler = make_lr_scheduler(config, optimizer)
        self.model, self.optimizer = accelerator.prepare(module, optimizer)
        self.ema = None
        if config.ema:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(self.params, decay=config.ema_decay)
        self.generator = torch.Generator(device=accelerator.device).manual_seed(config.seed + 7919 * accelerator.process_index)
        self.state = ckpt.TrainerState(samples_per_batch=config.batch_size * accelerator.num_processes)
        self.metrics = MetricsFile(self.output / METRICS, accelerator.is_main_process)
        self.result = TrainResult(output_dir=self.output, global_step=0)

    # --- state -------------------------------------------------------------------------------

    def weights(self) -> dict[str, torch.Tensor]:
        named = dict(self.accelerator.unwrap_model(self.model).named_parameters())
        return {name: named[name] for name in self.names}

    def ema_weights(self) -> dict[str, torch.Tensor] | None:
        if self.ema is None:
            return None
        return dict(zip(self.names, self.ema.shadow_params))

    def restore(self, loaded: ckpt.LoadedCheckpoint) -> None:
        path = loaded.path
        changed = ckpt.config_differences(loaded.config, self.config)
        if changed and self.accelerator.is_main_process:
            logger.warning("resuming %s with different settings (the loss curve will not continue exactly): %s", path, "; ".join(changed))
        try:
            ckpt.load_weights_into(self.accelerator.unwrap_model(self.model), loaded.weights, self.names)
            ckpt.apply_checkpoint(loaded, optimizer=self.optimizer, lr_scheduler=self.lr_scheduler, generator=self.generator)
        except (ValueError, KeyError, RuntimeError) as error:
            raise ConfigError(f"{path} does not fit this run: {str(error).splitlines()[0]}") from error
        if self.ema is not None:
            if loaded.ema_weights is None:
                raise ConfigError(f"{path} has no EMA weights but ema is on")
            for shadow, name in zip(self.ema.shadow_params, self.names):
                shadow.data.copy_(loaded.ema_weights[name].to(shadow.device, shadow.dtype))
            self.ema.optimization_step = loaded.state.global_step
        saved = loaded.state
        samples = saved.batches_in_epoch * saved.samples_per_batch
        self.state = ckpt.TrainerState(
            global_step=saved.global_step, epoch=saved.epoch,
            batches_in_epoch=samples // self.state.samples_per_batch, samples_per_batch=self.state.samples_per_batch,
        )
        self.metrics.truncate_after(saved.global_step)
        if self.accelerator.is_main_process:
            logger.info(
                "resumed from %s at step %d (epoch %d, batch %d)", path, saved.global_step, saved.epoch, saved.batches_in_epoch
            )

    def save(self) -> Path:
        path = ckpt.save_checkpoint(
            self.accelerator, self.output, weights=self.weights(), ema_weights=self.ema_weights(),
            optimizer=self.optimizer, lr_scheduler=self.lr_scheduler, state=self.state, config=self.config,
            generator=self.generator, keep_last=self.config.checkpoint.keep_last,
        )
        self.result.checkpoint = path
        return path

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> TrainResult:
        """Train to ``max_steps``, save, validate and export; the output folder's lock is released however it ends."""
        try:
            return self.steps()
        finally:
            self.release()

    def steps(self) -> TrainResult:
        config, accelerator = self.config, self.accelerator
        if self.resume_from is not None:
            self.restore(self.resume_from)
            self.resume_from = None  # the optimiser state read from disk is no longer needed
        if accelerator.is_main_process:
            save_config(config, self.output / "config.json")
        accelerator.init_trackers(f"{config.log.project}-{self.stage.name}", config=flat_config(config))
        from tqdm.auto import tqdm

        bar = tqdm(
            total=config.max_steps, initial=self.state.global_step, desc=self.stage.name,
            disable=not (accelerator.is_main_process and config.log.progress_bar), dynamic_ncols=True,
        )
        self.model.train()
        window = {"loss": 0.0, "micro": 0, "samples": 0, "start": time.perf_counter()}
        try:
            while self.state.global_step < config.max_steps:
                self.sampler.set_position(self.state.epoch, self.state.batches_in_epoch)
                for batch in self.batches():
                    self.state.batches_in_epoch += 1
                    self.micro_step(batch, window)
                    if accelerator.sync_gradients:
                        self.after_step(window, bar)
                        if self.state.global_step >= config.max_steps:
                            break
                else:
                    self.state.epoch += 1
                    self.state.batches_in_epoch = 0
            return self.finish()
        finally:
            bar.close()
            accelerator.end_training()

    def batches(self):
        """The loader's batches, their damaged-sample reports counted (:class:`datasets.damage.DamageTally`)."""
        try:
            for batch in self.loader:
                self.damage.account(batch)
                yield batch
        except DamagedDataError as error:  # from a DataLoader worker, torch adds the worker's traceback to it
            raise from_worker(error) from None

    def micro_step(self, batch: dict, window: dict) -> None:
        accelerator = self.accelerator
        with accelerator.accumulate(self.model):
            with accelerator.autocast():
                loss = self.stage.loss(self.model, batch, self.generator, self.config.timestep_sampling)
            mean_loss = accelerator.gather(loss.detach().float().reshape(1)).mean()
            if not torch.isfinite(mean_loss):
                self.stop_non_finite(mean_loss.item())
            accelerator.backward(loss)
            if accelerator.sync_gradients and self.config.optim.max_grad_norm > 0:
                accelerator.clip_grad_norm_(self.params, self.config.optim.max_grad_norm)
            self.optimizer.step()
            if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
                self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        window["loss"] += mean_loss.item()
        window["micro"] += 1
        window["samples"] += self.state.samples_per_batch

    def stop_non_finite(self, value: float) -> None:
        step = self.state.global_step + 1
        last = ckpt.list_checkpoints(self.output)
        kept = f"the last good checkpoint is {last[-1]}" if last else "no checkpoint was written yet"
        message = f"loss is {value} at step {step} (epoch {self.state.epoch}); training stopped before applying it; {kept}"
        if self.accelerator.is_main_process:
            logger.error(message)
        raise NonFiniteLossError(message)

    def after_step(self, window: dict, bar) -> None:
        config, accelerator, state = self.config, self.accelerator, self.state
        state.global_step += 1
        if self.ema is not None:
            self.ema.step(self.params)
        loss = window["loss"] / max(window["micro"], 1)
        window["loss"], window["micro"] = 0.0, 0
        lr = self.lr_scheduler.get_last_lr()[0]
        self.result.losses[state.global_step] = loss
        self.metrics.write({"step": state.global_step, "loss": loss, "lr": lr, "epoch": state.epoch})
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
        if state.global_step % config.log.every == 0 or state.global_step == config.max_steps:
            elapsed = time.perf_counter() - window["start"]
            accelerator.log(
                {"train/loss": loss, "train/lr": lr, "train/samples_per_s": window["samples"] / max(elapsed, 1e-9),
                 "train/epoch": state.epoch}, step=state.global_step,
            )
            window["samples"], window["start"] = 0, time.perf_counter()
        every = config.checkpoint.every
        if every and state.global_step % every == 0 and state.global_step < config.max_steps:
            self.save()
        every = config.validation.every
        if every > 0 and state.global_step % every == 0 and state.global_step < config.max_steps:
            self.validate()

    # --- validation, export --------------------------------------------------------------------

    @contextlib.contextmanager
    def swapped_in_ema(self):
        """Context: the EMA weights in the model (no-op without EMA)."""
        if self.ema is None:
            yield
            return
        self.ema.store(self.params)
        self.ema.copy_to(self.params)
        try:
            yield
        finally:
            self.ema.restore(self.params)

    def validate(self) -> list[Path]:
        folder = self.output / "samples" / f"step-{self.state.global_step:08d}"
        paths: list[Path] = []
        if self.accelerator.is_main_process:
            self.model.eval()
            with self.swapped_in_ema(), torch.no_grad():
                paths = self.stage.validate(folder, self.config.validation, seed=self.config.seed)
            self.model.train()
            self.result.samples += paths
        self.accelerator.wait_for_everyone()
        return paths

    def export(self) -> Path:
        """Write the trainable weights in diffusers format to OUTPUT/model (atomically)."""
        final = self.output / "model"
        if self.accelerator.is_main_process:
            tmp = self.output / ".tmp-model"
            if tmp.exists():
                shutil.rmtree(tmp)
            with self.swapped_in_ema():
                self.stage.export(tmp)
            save_config(self.config, tmp / "training_config.json")
            if final.exists():
                ckpt._remove(final)
            tmp.replace(final)
        self.accelerator.wait_for_everyone()
        self.result.export_dir = final
        return final

    def finish(self) -> TrainResult:
        last = ckpt.list_checkpoints(self.output)
        if not last or int(last[-1].name.removeprefix(ckpt.PREFIX)) != self.state.global_step:
            self.save()
        else:
            self.result.checkpoint = last[-1]
        if self.config.validation.every >= 0:
            self.validate()
        self.export()
        self.result.global_step = self.state.global_step
        return self.result


def lock_output(accelerator, output: Path) -> OutputLock | None:
    """The main process's lock on ``output`` (None on the others); every process raises :class:`ConfigError` when
    another run holds it."""
    from accelerate.utils import broadcast_object_list

    lock, refusal = None, [None]
    if accelerator.is_main_process:
        try:
            lock = OutputLock(output).acquire()
        except OutputFolderError as error:
            refusal = [str(error)]
    if accelerator.num_processes > 1:
        broadcast_object_list(refusal)
    if refusal[0]:
        raise ConfigError(refusal[0])
    return lock


def train(config: TrainConfig, stage: Stage) -> TrainResult:
    """Train ``stage`` with ``config``; see :class:`Trainer`."""
    return Trainer(config, stage).run()
