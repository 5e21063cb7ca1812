"""Long videos by the paper's noise-reuse scheme: windows of T frames sampled one after another.

Follow-Your-Pose (Sec. 3, "Training Stage 2"): "assuming that T frames are sampled each time, we add
the noise of the last T/2 frames to the next loop as prior knowledge after the first sampling ...
throughout the denoising process, the noise at each time step is added to the prior knowledge".
The release never shipped it; this is our reading, made exact:

- Window ``w`` covers frames ``[w * S, w * S + T)`` with stride ``S = T - O`` and overlap
  ``O = T // 2`` (configurable; ``O = 0`` samples independent windows, the ablation). The sequence is padded at the end to a whole window (the caller
  repeats the last pose frame) and trimmed afterwards.
- While window ``w - 1`` is denoised, the noisy latents of its last ``O`` frames entering every
  timestep are recorded. Window ``w`` starts from those frames' initial noise plus fresh noise for
  its ``S`` new frames and, **before every timestep**, overwrites its first ``O`` frames with the
  recorded latents of that timestep: the prior. Its new frames thus denoise next to the exact
  trajectory of the frames they continue.
- The output keeps all frames of the first window and the ``S`` new frames of each later window.

Each window costs T frames of UNet work for S new frames, so time per frame is flat in the length.
Window ``w`` only needs its predecessor's latents entering the *same* timestep, so windows can also run in
lockstep: ``window_batch`` windows denoised together, one UNet call per timestep, with the same result as one
after another (the default, 1). Memory holds ``window_batch`` windows plus ``steps x O`` recorded latent frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch


@dataclass(frozen=True)
class Window:
    """One window: frames ``[start, start + size)`` of the padded sequence; its first ``prior`` come from the previous window."""

    index: int
    start: int
    size: int
    prior: int

    @property
    def stop(self) -> int:
        return self.start + self.size


def plan_windows(num_frames: int, window: int, overlap: int | None = None) -> list[Window]:
    """The windows covering ``num_frames`` frames (padded length = last window's ``stop``).

    A clip no longer than ``window`` is one window of exactly ``num_frames`` frames. ``overlap`` 0 gives
    independent windows (fresh noise, no prior): the ablation of the noise-reuse scheme.
    """
    if num_frames < 1:
        raise ValueError("num_frames must be positive")
    if window < 2:
        raise ValueError("window must hold at least 2 frames")
    overlap = window // 2 if overlap is None else overlap
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in 0..{window - 1}, got {overlap}")
    if num_frames <= window:
        return [Window(0, 0, num_frames, 0)]
    stride = window - overlap
    count = -(-(num_frames - window) // stride) + 1
    return [Window(i, i * stride, window, 0 if i == 0 else overlap) for i in range(count)]


def padded_length(windows: Sequence[Window]) -> int:
    return windows[-1].stop


def sample_windows(
    windows: Sequence[Window],
    timesteps: Sequence,
    make_noise: Callable[[int], torch.Tensor],
    step: Callable[[list[torch.Tensor], object, Sequence[Window]], list[torch.Tensor]],
    on_step: Callable[[Window, int], None] | None = None,
    batch: int = 1,
) -> torch.Tensor:
    """Denoise every window and return the final latents ``(B, C, N_padded, h, w)``.

    ``make_noise(n)`` draws initial latents ``(B, C, n, h, w)`` for ``n`` new frames;
    ``step(latents, t, group)`` is one denoising step of the windows of ``group``, one latents tensor each;
    ``on_step`` is called after each step of each window (progress bars).

    ``batch`` windows are denoised together, in lockstep, in one ``step`` call per timestep: window ``w`` needs
    window ``w - 1``'s latents entering the same timestep, which exist once both have taken the previous step,
    so the result is the same as one window after another (1, the default), with ``batch`` times fewer, larger
    calls and ``batch`` windows in memory. The initial noise is drawn in the same order either way.
    """
    outputs: list[torch.Tensor] = []
    track: list[torch.Tensor] | None = None
    if batch < 1:
        raise ValueError("batch must be positive")
    for first in range(0, len(windows), batch):
        group = list(windows[first : first + batch])
        if group[0].prior and track is None:
            raise ValueError("a window with a prior must follow another window")
        latents: list[torch.Tensor] = []
        for k, window in enumerate(group):
            if window.prior:
                source = track[0] if k == 0 else latents[k - 1][:, :, -window.prior :]
                latents.append(torch.cat([source, make_noise(window.size - window.prior)], dim=2))
            else:
                latents.append(make_noise(window.size))
        last = group[-1]
        keep = windows[last.index + 1].prior if last.index + 1 < len(windows) else 0
        recorded = []
        for index, t in enumerate(timesteps):
            for k, window in enumerate(group):  # in order: each window's prior is its predecessor's frames now
                if window.prior:
                    source = track[index] if k == 0 else latents[k - 1][:, :, -window.prior :]
                    latents[k] = torch.cat([source, latents[k][:, :, window.prior :]], dim=2)
            if keep:
                recorded.append(latents[-1][:, :, last.size - keep :].clone())
            latents = step(latents, t, group)
            if on_step is not None:
                for window in group:
                    on_step(window, index)
        outputs.extend(part[:, :, window.prior :] for part, window in zip(latents, group))
        track = recorded
    return torch.cat(outputs, dim=2)
