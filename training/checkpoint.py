"""Atomic training checkpoints: write into a temporary folder, then rename.

``OUTPUT/checkpoints/step-00001000/`` holds

- ``trainable.safetensors``: the trainable parameters only (names as in the
  stage's trainable module), fp32;
- ``ema.safetensors``: their exponential moving average, when EMA is on;
- ``optimizer.pt`` and ``scheduler.pt``: optimiser and learning-rate scheduler state;
- ``rng/rank-N.pt``: the RNG states of process N (python, numpy, torch CPU,
  every CUDA device, and the loop's own noise generator);
- ``state.json``: step, epoch and data position (batches consumed in the epoch);
- ``config.json``: the resolved training config.

A checkpoint is written under ``.tmp-step-...`` and renamed when complete, so
a crash while saving leaves the previous checkpoints untouched and never a
folder that looks complete but is not; leftovers of such crashes are ignored
and removed by the next save. Old checkpoints beyond ``keep_last`` are
renamed away before they are deleted, for the same reason.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from training.config import save_config

CHECKPOINTS = "checkpoints"
PREFIX = "step-"
TMP_PREFIX = ".tmp-"
WEIGHTS = "trainable.safetensors"
EMA_WEIGHTS = "ema.safetensors"
OPTIMIZER = "optimizer.pt"
SCHEDULER = "scheduler.pt"
STATE = "state.json"
CONFIG = "config.json"
logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class TrainerState:
    """Where training is: enough to continue the same run."""

    global_step: int = 0
    """Optimiser steps done."""
    epoch: int = 0
    """Current pass over the data (0-based)."""
    batches_in_epoch: int = 0
    """Per-process batches of ``epoch`` already consumed (the data position)."""
    samples_per_batch: int = 1
    """Global samples per per-process batch (batch size x processes) when this was written."""


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINTS


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name.removeprefix(PREFIX)))


def resolve_resume(output_dir: str | Path, resume: str) -> Path | None:
    """The checkpoint to resume from: ``""`` none, ``latest`` the newest one (None if the run has none), else a path."""
    if not resume:
        return None
    if resume == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE).is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {STATE})")
    return path


def _rng_state(generator: torch.Generator | None) -> dict:
    keys_name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (keys_name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def _restore_rng(state: dict, generator: torch.Generator | None) -> None:
    random.setstate(state["python"])
    keys_name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((keys_name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"].to(generator.get_state().device))


def _write_weights(weights: dict[str, torch.Tensor], path: Path) -> None:
    save_file({name: tensor.detach().to("cpu", torch.float32).contiguous() for name, tensor in weights.items()}, str(path))


def _write_training_state(folder: Path, *, optimizer, lr_scheduler, state: TrainerState, config) -> None:
    torch.save(optimizer.state_dict(), folder / OPTIMIZER)
    torch.save(lr_scheduler.state_dict(), folder / SCHEDULER)
    save_config(config, folder / CONFIG)
    (folder / STATE).write_text(json.dumps(asdict(state), indent=2))


def save_checkpoint(
    accelerator,
    output_dir: str | Path,
    *,
    weights: dict[str, torch.Tensor],
    ema_weights: dict[str, torch.Tensor] | None,
    optimizer,
    lr_scheduler,
    state: TrainerState,
    config,
    generator: torch.Generator | None,
    keep_last: int,
) -> Path:
    """Write a checkpoint of ``state.global_step`` on every process, atomically; returns its folder."""
    root = checkpoint_root(output_dir)
    final = root / checkpoint_name(state.global_step)
    tmp = root / f"{TMP_PREFIX}{final.name}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / "rng").mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(_rng_state(generator), tmp / "rng" / f"rank-{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        _write_weights(weights, tmp / WEIGHTS)
        if ema_weights is not None:
            _write_weights(ema_weights, tmp / EMA_WEIGHTS)
        _write_training_state(tmp, optimizer=optimizer, lr_scheduler=lr_scheduler, state=state, config=config)
        _fsync_tree(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            _remove(final)
        os.replace(tmp, final)
        prune_checkpoints(output_dir, keep_last)
    accelerator.wait_for_everyone()
    return final


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def _remove(folder: Path) -> None:
    doomed = folder.with_name(f"{TMP_PREFIX}delete-{folder.name}")
    if doomed.exists():
        shutil.rmtree(doomed)
    os.replace(folder, doomed)
    shutil.rmtree(doomed)


def prune_checkpoints(output_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the ``keep_last`` newest checkpoints and any temporary leftovers; returns what was removed."""
    removed = list_checkpoints(output_dir)[:-keep_last]
    for folder in removed:
        _remove(folder)
    root = checkpoint_root(output_dir)
    for leftover in root.glob(f"{TMP_PREFIX}*") if root.is_dir() else []:
        shutil.rmtree(leftover, ignore_errors=True)
    return removed


@dataclass(frozen=True, kw_only=True)
class LoadedCheckpoint:
    path: Path
    state: TrainerState
    weights: dict[str, torch.Tensor]
    ema_weights: dict[str, torch.Tensor] | None


def load_checkpoint(path: str | Path, *, process_index: int, optimizer, lr_scheduler, generator) -> LoadedCheckpoint:
    """Restore optimiser, scheduler and this process's RNG states from ``path``; return the weights and state.

    The caller loads the weights into its modules (they must match its trainable parameters exactly).
    """
    path = Path(path)
    state = TrainerState(**json.loads((path / STATE).read_text()))
    optimizer.load_state_dict(torch.load(path / OPTIMIZER, map_location="cpu", weights_only=True))
    lr_scheduler.load_state_dict(torch.load(path / SCHEDULER, map_location="cpu", weights_only=True))
    rng_path = path / "rng" / f"rank-{process_index}.pt"
    if rng_path.is_file():
        _restore_rng(torch.load(rng_path, map_location="cpu", weights_only=True), generator)
    else:  # resumed on more processes than saved: this rank keeps its freshly seeded streams
        logger.warning("%s has no RNG state for process %d; its random streams start fresh", path, process_index)
    ema = load_file(str(path / EMA_WEIGHTS)) if (path / EMA_WEIGHTS).is_file() else None
    return LoadedCheckpoint(path=path, state=state, weights=load_file(str(path / WEIGHTS)), ema_weights=ema)


def config_differences(path: str | Path, config) -> list[str]:
    """Settings that change the training trajectory and differ from those the checkpoint was written with."""
    from training.config import load_config, to_dict

    def flat(values: dict, prefix: str = "") -> dict:
        out = {}
        for name, value in values.items():
            out.update(flat(value, f"{prefix}{name}.") if isinstance(value, dict) else {prefix + name: value})
        return out

    ignored = ("max_steps", "resume", "output_dir", "log.", "checkpoint.", "validation.", "data.num_workers")
    old, new = flat(to_dict(load_config(Path(path) / CONFIG))), flat(to_dict(config))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k) and not k.startswith(ignored)]


def load_weights_into(module: torch.nn.Module, weights: dict[str, torch.Tensor], names: list[str]) -> None:
    """Copy ``weights`` into the parameters ``names`` of ``module``; the two name sets must be equal."""
    missing, unexpected = sorted(set(names) - set(weights)), sorted(set(weights) - set(names))
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match the trainable parameters: missing {missing[:5]}, unexpected {unexpected[:5]}")
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name in names:
            params[name].copy_(weights[name].to(params[name].device, params[name].dtype))
