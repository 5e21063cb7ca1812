"""Stage 0's first step at toy scale: teach the tiny random VAE to reconstruct the training images.

A random ``AutoencoderKL`` decodes its own latents into noise, so a diffusion model trained
on those latents can never show a figure, however well it learns. Stage 0 therefore first
trains the tiny base's VAE (``model.autoencoder_steps``) on the same images: mean squared
error of the decoded posterior mean, AdamW, random batches of the training set. The VAE's
log-variance stays fixed (``model.tiny_vae_log_variance``), so the posterior is near
deterministic and no KL term is needed. The trained VAE replaces ``OUTPUT/tiny-base/vae``
(written under a temporary name, then swapped in) and ``OUTPUT/tiny-base/autoencoder.json``
records it, last: a resumed run finds the file and does not train again.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from datasets.atomic import write_json

log = logging.getLogger(__name__)
RECORD = "autoencoder.json"


def is_trained(base: str | Path) -> bool:
    """Whether the VAE of the base folder ``base`` was already trained by :func:`train_into_base`."""
    return (Path(base) / RECORD).is_file()


def repair(base: str | Path) -> None:
    """Finish or undo a swap that a killed run left half done (the VAE folder is never missing afterwards)."""
    base = Path(base)
    fresh, old = base / ".vae-trained", base / ".vae-random"
    if not (base / "vae").exists() and old.exists():
        old.replace(base / "vae")
    if not is_trained(base):
        shutil.rmtree(fresh, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def train_autoencoder(
    vae, images: Callable[[torch.Tensor], torch.Tensor], count: int, *, steps: int, lr: float, batch_size: int, seed: int
) -> list[float]:
    """Train ``vae`` in place for ``steps`` steps; ``images(indices)`` gives ``(N, 3, H, W)`` in [-1, 1] of
    ``count`` training images. Returns the loss of every step."""
    generator = torch.Generator().manual_seed(seed)
    vae.requires_grad_(True)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    vae.train()
    losses, started = [], time.monotonic()
    for step in range(steps):
        indices = torch.randint(0, count, (min(batch_size, count),), generator=generator)
        pixels = images(indices).to(vae.device, vae.dtype)
        reconstruction = vae.decode(vae.encode(pixels).latent_dist.mean).sample
        loss = F.mse_loss(reconstruction.float(), pixels.float())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"autoencoder loss is {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == steps - 1:
            log.info("autoencoder step %d/%d: loss %.4f (%.0f s)", step + 1, steps, losses[-1], time.monotonic() - started)
    vae.eval()
    vae.requires_grad_(False)
    return losses


def train_into_base(vae, base: str | Path, images, count: int, *, steps: int, lr: float, batch_size: int, seed: int) -> dict:
    """Train ``vae`` (:func:`train_autoencoder`) and store it as ``base``'s VAE; returns the record written."""
    base = Path(base)
    started = time.monotonic()
    losses = train_autoencoder(vae, images, count, steps=steps, lr=lr, batch_size=batch_size, seed=seed)
    fresh, old = base / ".vae-trained", base / ".vae-random"
    shutil.rmtree(fresh, ignore_errors=True)
    vae.save_pretrained(fresh, safe_serialization=True)
    shutil.rmtree(old, ignore_errors=True)
    (base / "vae").replace(old)
    fresh.replace(base / "vae")
    shutil.rmtree(old)
    tail = losses[-min(20, len(losses)) :]
    record = {"steps": steps, "lr": lr, "batch_size": batch_size, "seed": seed, "first_loss": losses[0],
              "final_loss": sum(tail) / len(tail), "seconds": round(time.monotonic() - started, 1)}  # fmt: skip
    write_json(base / RECORD, record, indent=1, ensure_ascii=True)
    log.info("autoencoder trained: loss %.4f -> %.4f in %.0f s", record["first_loss"], record["final_loss"], record["seconds"])
    return record
