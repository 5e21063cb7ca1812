"""What a training stage gives the one training loop (:mod:`training.loop`): the whole contract, typed.

The loop calls these, in this order: ``setup(accelerator)`` (cheap checks first, then loading), ``dataset()``,
``batch_sampler(...)``, ``collate`` and ``num_workers`` for the DataLoader, ``trainable_module()`` and
``trainable_names()`` (the parameters optimised, checkpointed and exported), ``enable_gradient_checkpointing()``
when asked, then ``loss(...)`` for every micro-batch, ``validate(...)`` every ``validation.every`` steps and
``export(folder)`` at the end. :class:`training.stages.DiffusionStage` implements the shared parts;
:class:`training.stages.PoseImageStage` (stage 1), :class:`training.stages.VideoStage` (stage 2) and
:class:`training.base_stage.BaseImageStage` (stage 0) each supply their own modules, data and loss, composing
the shared helpers rather than inheriting from one another.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Stage(Protocol):
    """A training stage as the loop sees it."""

    name: str
    """Short name used in logs and folder names (``stage0``, ``stage1``, ``stage2``)."""

    def setup(self, accelerator: Any) -> None:
        """Check the config against the data and base model, then load the models onto ``accelerator.device``."""

    def dataset(self) -> torch.utils.data.Dataset:
        """The training data (indexed by ``(epoch, index)`` through :meth:`batch_sampler`)."""

    def batch_sampler(self, length: int, batch_size: int, *, rank: int, world: int) -> Any:
        """A resumable sampler of batches for process ``rank`` of ``world``."""

    def collate(self, samples: list[dict]) -> dict:
        """Samples to one batch."""

    @property
    def num_workers(self) -> int:
        """DataLoader worker processes."""

    def trainable_module(self) -> torch.nn.Module:
        """The module the optimiser, DDP and checkpoints see."""

    def trainable_names(self) -> list[str]:
        """Parameter names inside :meth:`trainable_module` that train (the only ones saved and exported)."""

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in the backward pass."""

    def loss(self, model: torch.nn.Module, batch: dict, generator: torch.Generator, sampling: str) -> torch.Tensor:
        """The scalar loss of one micro-batch (``model`` is the prepared :meth:`trainable_module`)."""

    def validate(self, folder: Path, validation: Any, *, seed: int) -> list[Path]:
        """Draw the validation samples into ``folder``; return the files written."""

    def export(self, folder: Path) -> None:
        """Write the trained result in the layout its readers take (see :mod:`follow_your_pose.export`)."""
