"""The optimiser and learning-rate schedule of a training run, from its config."""

from __future__ import annotations

import torch

from training.config import TrainConfig


def make_optimizer(config: TrainConfig, parameters: list[torch.nn.Parameter]):
    """AdamW (fused where the device has the kernel and ``optim.fused`` is on), or bitsandbytes' 8-bit AdamW when
    asked (a clear error when it is not installed)."""
    optim = config.optim
    kwargs = dict(lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay, eps=optim.eps)
    if optim.use_8bit_adam:  # check_environment made sure it imports
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(parameters, **kwargs)
    devices = {p.device.type for p in parameters}
    fused = optim.fused and devices <= {"cpu", "cuda"} and all(p.is_floating_point() for p in parameters)
    return torch.optim.AdamW(parameters, **kwargs, fused=fused or None)


def make_lr_scheduler(config: TrainConfig, optimizer):
    from diffusers.optimization import get_scheduler

    return get_scheduler(
        config.optim.scheduler, optimizer, num_warmup_steps=config.optim.warmup_steps, num_training_steps=config.max_steps
    )
