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

Resuming reads a checkpoint whole before using any of it
(:func:`read_checkpoint`): a file that is missing, truncated or not what it
should be is a :class:`DamagedCheckpointError` naming it. ``--resume latest``
then falls back to the newest intact checkpoint with a warning naming the
damaged file (:func:`resolve_resume`), and sets the damaged newer ones aside as
``damaged-step-N`` (kept for a look, no longer taking a ``keep_last`` place
from the good ones); with none intact it stops with one line.
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
DAMAGED_PREFIX = "damaged-"
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


class DamagedCheckpointError(ValueError):
    """A checkpoint file is missing, truncated or garbage; the message names the file."""


def _candidates(output_dir: str | Path) -> list[Path]:
    """Every ``step-N`` folder of a run, complete or not, newest first."""
    root = checkpoint_root(output_dir)
    found = [p for p in root.iterdir() if p.is_dir() and p.name.removeprefix(PREFIX).isdigit()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.removeprefix(PREFIX)), reverse=True)


def resolve_resume(
    output_dir: str | Path, resume: str, *, process_index: int = 0, set_aside: bool = True
) -> "LoadedCheckpoint | None":
    """The checkpoint to resume from, read whole: ``""`` none, ``latest`` the newest intact one (None if the run has
    no checkpoint; a warning names each damaged newer one, which ``set_aside`` renames ``damaged-step-N``), else the
    checkpoint at that path.

    Raises :class:`DamagedCheckpointError` when the named checkpoint, or every checkpoint of the run, is damaged.
    """
    if not resume:
        return None
    if resume != "latest":
        return read_checkpoint(resume, process_index=process_index)
    damaged: dict[Path, str] = {}
    for path in _candidates(output_dir):
        try:
            loaded = read_checkpoint(path, process_index=process_index)
        except DamagedCheckpointError as error:
            damaged[path] = str(error)
            logger.warning("checkpoint %s is damaged, trying an older one: %s", path.name, error)
            continue
        if damaged:
            logger.warning("resuming from %s, the newest intact checkpoint (damaged: %s)", path.name, "; ".join(damaged.values()))
        for folder in damaged if set_aside else ():
            os.replace(folder, folder.with_name(DAMAGED_PREFIX + folder.name))
            logger.warning("set the damaged %s aside as %s", folder.name, DAMAGED_PREFIX + folder.name)
        return loaded
    if damaged:
        raise DamagedCheckpointError(
            f"--resume latest: no intact checkpoint in {checkpoint_root(output_dir)} ({'; '.join(damaged.values())})"
        )
    return None


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
    """A checkpoint read whole into memory (nothing applied yet)."""

    path: Path
    state: TrainerState
    config: object
    """The training config it was written with."""
    weights: dict[str, torch.Tensor]
    ema_weights: dict[str, torch.Tensor] | None
    optimizer: dict
    scheduler: dict
    rng: dict | None
    """This process's RNG states; None when the checkpoint was written by fewer processes."""


def _read(folder: Path, name: str, reader):
    """``reader(folder / name)``, any failure turned into a :class:`DamagedCheckpointError` naming the file."""
    path = folder / name
    if not path.is_file():
        raise DamagedCheckpointError(f"{folder.name}/{name} is missing")
    try:
        value = reader(path)
    except Exception as error:  # noqa: BLE001 - torch, safetensors and json raise many kinds on a damaged file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DamagedCheckpointError(f"{folder.name}/{name} is damaged ({reason[:200]})") from None
    return value


def _torch_dict(path: Path) -> dict:
    value = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(value, dict):
        raise ValueError(f"holds a {type(value).__name__}, not a state dict")
    return value


def _state(path: Path) -> TrainerState:
    values = json.loads(path.read_text())
    if not isinstance(values, dict):
        raise ValueError("not a JSON object")
    return TrainerState(**values)


def _rng_files(path: Path, process_index: int) -> dict | None:
    """This process's RNG states (None if fewer processes wrote the checkpoint); every rank's file must be readable."""
    folder = path / "rng"
    ranks = sorted(int(p.stem.removeprefix("rank-")) for p in folder.glob("rank-*.pt")) if folder.is_dir() else []
    if ranks != list(range(len(ranks))) or not ranks:
        expected = next(i for i in range(len(ranks) + 1) if i not in ranks)
        raise DamagedCheckpointError(f"{path.name}/rng/rank-{expected}.pt is missing")
    states = {rank: _read(path, f"rng/rank-{rank}.pt", _rng_dict) for rank in ranks}
    return states.get(process_index)


def _rng_dict(path: Path) -> dict:
    value = _torch_dict(path)
    missing = sorted({"python", "numpy", "torch"} - set(value))
    if missing:
        raise ValueError(f"no {', '.join(missing)} state")
    return value


def read_checkpoint(path: str | Path, *, process_index: int) -> LoadedCheckpoint:
    """Read every file of the checkpoint at ``path``; :class:`DamagedCheckpointError` naming the first bad one."""
    from training.config import load_config

    path = Path(path)
    if not path.is_dir():
        raise DamagedCheckpointError(f"{path} is not a checkpoint folder")
    return LoadedCheckpoint(
        path=path,
        state=_read(path, STATE, _state),
        config=_read(path, CONFIG, load_config),
        weights=_read(path, WEIGHTS, _weights),
        ema_weights=_read(path, EMA_WEIGHTS, _weights) if (path / EMA_WEIGHTS).exists() else None,
        optimizer=_read(path, OPTIMIZER, _torch_dict),
        scheduler=_read(path, SCHEDULER, _torch_dict),
        rng=_rng_files(path, process_index),
    )


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def apply_checkpoint(loaded: LoadedCheckpoint, *, optimizer, lr_scheduler, generator) -> None:
    """Restore optimiser, scheduler and this process's RNG states from ``loaded``.

    The caller loads the weights into its modules (they must match its trainable parameters exactly).
    """
    optimizer.load_state_dict(loaded.optimizer)
    lr_scheduler.load_state_dict(loaded.scheduler)
    if loaded.rng is not None:
        _restore_rng(loaded.rng, generator)
    else:  # resumed on more processes than saved: this rank keeps its freshly seeded streams
        logger.warning("%s has no RNG state for this process; its random streams start fresh", loaded.path)


def config_differences(saved, config) -> list[str]:
    """Settings that change the training trajectory and differ between ``saved`` (the checkpoint's config) and
    ``config``."""
    from training.config import to_dict

    def flat(values: dict, prefix: str = "") -> dict:
        out = {}
        for name, value in values.items():
            out.update(flat(value, f"{prefix}{name}.") if isinstance(value, dict) else {prefix + name: value})
        return out

    ignored = ("max_steps", "resume", "output_dir", "log.", "checkpoint.", "validation.", "data.num_workers")
    old, new = flat(to_dict(saved)), flat(to_dict(config))
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
