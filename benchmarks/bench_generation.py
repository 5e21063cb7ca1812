"""Seconds and peak memory per pose-guided video: our pipeline against diffusers' AnimateDiff + ControlNet.

    python -m benchmarks.bench_generation [--frames 16 64] [--size 64] [--steps 4] [--pairs 5] [--window 16] [--threads 1]

The user's alternative in diffusers is ``AnimateDiffControlNetPipeline`` on the same SD-1.x base. Both sides are
built tiny from the same random SD-shaped folder (:func:`follow_your_pose.tiny.save_tiny_sd`), so they share the
2-D UNet weights, VAE, text encoder, tokenizer and DDIM scheduler (:mod:`benchmarks.tiny_pipeline`):

- ``ours``: ``FollowYourPosePipeline``, our inflated UNet and pose encoder; clips longer than ``--window`` frames
  by the paper's noise-reuse windows (stride ``window - overlap``, overlap half the window by default), one after
  another as it comes, and (``ours_batched``) ``--window-batch`` windows in lockstep, one UNet call per step for
  them all (``window_batch``: the same video, fewer and larger calls);
- ``animatediff``: ``UNetMotionModel.from_unet2d`` with a ``MotionAdapter`` built from a config, a
  ``ControlNetModel.from_unet`` of the same UNet, the same skeleton frames as ``conditioning_frames``; past
  ``--window`` frames with diffusers' FreeNoise (``enable_free_noise``: context ``--window``, stride
  ``--context-stride``), its own long-video scheduling.

Same prompt, frames, steps, guidance (CFG 7.5, empty negative), resolution, seed and decode chunk on both sides.
Each side lives in its own process (:mod:`benchmarks.timing`): a warm-up, then ``--pairs`` interleaved rounds; the
time ratio is the median of per-round ratios. Memory, judged on what a run has in use at its peak: each side again in
a process of its own whose freed memory goes straight back to the system, three runs after a warm-up
(:func:`benchmarks.timing.memory_in_use`; ``max_memory_allocated`` on GPU). The timed processes' resident-set growth
(glibc's defaults, the peak mark reset after the build) is printed too, but it is no verdict: glibc keeps freed blocks
in its heap, so it swings with the order of allocations (31-53 MiB for the same 16-frame video, run after run). ``--threads`` torch threads per process. Before timing, one hooked run per side counts the UNet calls and the frames they
carried (``frame passes``: batch x frames, CFG doubling included), and the ControlNet's or pose encoder's, because
equal work is the fair basis. Target: ours not slower (time ratio <= 1) and not larger (memory ratio <= 1).
"""

from __future__ import annotations

import multiprocessing
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from benchmarks.timing import RoundsConfig
from benchmarks.tiny_pipeline import check_shape

@dataclass(frozen=True, kw_only=True)
class Settings(RoundsConfig):
    """What one benchmark run measures."""

    frames: tuple[int, ...] = (16, 64)
    """Video lengths."""
    size: int = 64
    """Frame side in pixels, a multiple of 64."""
    steps: int = 4
    """DDIM steps."""
    window: int = 16
    """Frames per window (ours) / FreeNoise context (theirs)."""
    overlap: int | None = None
    """Our window overlap (None: half the window)."""
    window_batch: int = 0
    """Windows ours denoises in lockstep in its batched run (0: frames / window, so its UNet calls carry as many
    frames as AnimateDiff's)."""
    context_stride: int = 4
    """FreeNoise context stride (diffusers' default 4)."""
    shape: str = "tiny"
    """UNet shape (:data:`benchmarks.tiny_pipeline.SHAPES`): tiny, sd-scaled (SD 1.4's proportions at a quarter of
    its widths; with ``--size 256`` its attention weighs as SD's at 512x512) or sd."""
    threads: int = 1
    """Torch threads per process (1: on a busy shared CPU a second thread makes every small op wait for a
    descheduled partner)."""
    device: str = "auto"
    """Torch device; auto picks cuda when available."""

    def __post_init__(self) -> None:
        if min(self.frames) < 2 or self.size % 64 or self.steps < 1 or self.pairs < 1 or self.window < 2 or self.context_stride < 1:
            raise ValueError("frames >= 2, size a multiple of 64, steps, pairs, context stride >= 1, window >= 2")
        if self.window_batch < 0 or self.threads < 1:
            raise ValueError("window batch >= 0 (0: automatic), threads >= 1")
        check_shape(self.shape)
        if self.overlap is not None and not 0 <= self.overlap < self.window:
            raise ValueError(f"overlap must be in 0..{self.window - 1}")


def _device(name: str):
    import torch

    from pose_extraction.estimator import resolve_device

    return torch.device(resolve_device(name))


def setups(settings: Settings, frames: int) -> dict[str, int]:
    """The measured setups for ``frames`` and the windows each of ours runs in lockstep (0 for AnimateDiff): ours as
    it comes (one window after another), and past one window also ours batched (``--window-batch``)."""
    named = {"ours": 1}
    if frames > settings.window:
        named["ours_batched"] = settings.window_batch or max(2, frames // settings.window)
    return {**named, "animatediff": 0}


def build_side(side: str, window_batch: int, base: str, settings: Settings, frames: int):
    """The pipeline of ``side`` on ``base``, set up for ``frames`` frames (FreeNoise past one context), and the call
    that generates one video."""
    import torch
    from PIL import Image

    from benchmarks.tiny_pipeline import build_animatediff_controlnet, build_pipeline, swaying_poses

    torch.set_num_threads(settings.threads)
    poses = swaying_poses(frames, settings.size)
    common = dict(num_inference_steps=settings.steps, guidance_scale=7.5, output_type="np", decode_chunk_size=8)
    if side != "animatediff":
        pipe = build_pipeline(base).to(_device(settings.device))

        def generate() -> None:
            pipe("a person dancing", poses, window_size=settings.window, window_overlap=settings.overlap,
                 window_batch=window_batch, generator=torch.Generator().manual_seed(0), **common)  # fmt: skip

        return pipe, generate
    pipe = build_animatediff_controlnet(base, motion_max_seq_length=max(32, settings.window)).to(_device(settings.device))
    if frames > settings.window:
        pipe.enable_free_noise(context_length=settings.window, context_stride=settings.context_stride)
    images = [Image.fromarray(frame) for frame in poses]

    def generate() -> None:
        pipe("a person dancing", num_frames=frames, conditioning_frames=images, height=settings.size, width=settings.size,
             generator=torch.Generator().manual_seed(0), **common)  # fmt: skip

    return pipe, generate


def generation_run(side: str, window_batch: int, base: str, settings: Settings, frames: int):
    """Worker factory (:class:`benchmarks.timing.Worker`): build ``side`` and return one video's generation. The
    process's freed heap is trimmed after the build (Linux; the worker then resets its peak-RSS mark), so the peak the
    worker reports is generation's own."""
    import ctypes
    import gc

    generate = build_side(side, window_batch, base, settings, frames)[1]
    gc.collect()
    if Path("/proc/self/clear_refs").exists():  # Linux (glibc): hand the build's freed heap back
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return generate


def count_work(side: str, window_batch: int, base: str, settings: Settings, frames: int) -> dict:
    """One hooked generation of ``side``: calls and frame passes of the UNet and of the pose branch (ControlNet or
    pose encoder), and how the frames were windowed."""
    from follow_your_pose.long_video import plan_windows

    pipe, generate = build_side(side, window_batch, base, settings, frames)
    counts = {"unet": [0, 0], "pose": [0, 0]}

    def counter(name: str):
        def hook(module, args) -> None:
            sample = args[0]
            counts[name][0] += 1
            counts[name][1] += sample.shape[0] * (sample.shape[2] if sample.ndim == 5 else 1)

        return hook

    pipe.unet.register_forward_pre_hook(counter("unet"))
    (pipe.controlnet if side == "animatediff" else pipe.pose_encoder).register_forward_pre_hook(counter("pose"))
    generate()
    if side != "animatediff":
        windows = plan_windows(frames, settings.window, settings.overlap)
        stride = windows[1].start if len(windows) > 1 else frames
        order = f"{window_batch} at a time in lockstep" if window_batch > 1 else "one after another"
        scheme = (f"{len(windows)} window(s) of {windows[0].size} frames, stride {stride} (overlap {windows[-1].prior}), "
                  f"{order}, {settings.steps} steps each")  # fmt: skip
    elif frames > settings.window:
        block = next(m for m in pipe.unet.modules() if type(m).__name__ == "FreeNoiseTransformerBlock")
        contexts = block._get_frame_indices(frames)
        if contexts[-1][1] != frames:  # diffusers adds a last context ending at the last frame
            contexts.append((frames - settings.window, frames))
        scheme = (f"FreeNoise: UNet and ControlNet see all {frames} frames at once; each motion module attends over "
                  f"{len(contexts)} contexts of {settings.window} frames, stride {settings.context_stride} (pyramid-weighted)")  # fmt: skip
    else:
        scheme = f"one pass over all {frames} frames (motion modules attend over all of them)"
    return {"unet_calls": counts["unet"][0], "unet_frames": counts["unet"][1], "pose_calls": counts["pose"][0],
            "pose_frames": counts["pose"][1], "scheme": scheme}  # fmt: skip


def compare(base: str, settings: Settings, frames: int) -> None:
    from benchmarks.timing import Worker, interleave, memory_in_use, pair_ratio, print_timings, verdict

    print(f"\n== {frames} frames of {settings.size}x{settings.size}, {settings.steps} DDIM steps, CFG 7.5 ==", flush=True)
    named = setups(settings, frames)
    for side, window_batch in named.items():
        # in a process of its own: spawned workers inherit this process's peak RSS as their floor (Linux keeps the
        # pre-exec high-water mark), so this one must never grow past theirs
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            work = pool.apply(count_work, (side, window_batch, base, settings, frames))
        pose_name = "ControlNet" if side == "animatediff" else "pose encoder"
        print(f"{side:>13}: {work['scheme']}")
        print(f"{'':>13}  UNet: {work['unet_calls']} calls, {work['unet_frames']} frame passes "
              f"({work['unet_frames'] / frames:.1f} per output frame); {pose_name}: {work['pose_calls']} calls, "
              f"{work['pose_frames']} frame passes", flush=True)  # fmt: skip
    device = str(_device(settings.device))
    workers = {side: Worker(generation_run, (side, batch, base, settings, frames), device=device) for side, batch in named.items()}
    results = interleave(workers, pairs=settings.pairs)
    print_timings(results, per="video")
    in_use = {side: memory_in_use(generation_run, (side, batch, base, settings, frames), device=device) for side, batch in named.items()}
    print(f"{'in use at peak, MiB median (min-max) of 3 runs':>52}: " + ", ".join(f"{side} {spread}" for side, spread in in_use.items()))
    theirs = results["animatediff"]
    for side in (name for name in named if name != "animatediff"):
        ours = results[side]
        time_ratio = pair_ratio(ours, theirs)
        memory = in_use[side].median / max(in_use["animatediff"].median, 1e-6)
        resident = ours.peak_mib / theirs.peak_mib if theirs.peak_mib > 0 else float("nan")
        print(f"{side + '/AD':>16} time {time_ratio} ({verdict(time_ratio.median, 1.0)}), CPU "
              f"{ours.cpu_spread.median / theirs.cpu_spread.median:.2f}, memory in use {memory:.2f} "
              f"({verdict(memory, 1.0)}); resident growth {resident:.2f} (glibc's heap, not a verdict)", flush=True)  # fmt: skip

def main(argv: list[str] | None = None) -> int:
    import diffusers

    from benchmarks.timing import start
    from benchmarks.tiny_pipeline import save_base

    settings = start(Settings, argv, prog="python -m benchmarks.bench_generation", doc=__doc__)
    print(f"diffusers {diffusers.__version__}")
    with tempfile.TemporaryDirectory() as folder:
        base = str(save_base(Path(folder) / "base", settings.shape, settings.size))
        for frames in settings.frames:
            compare(base, settings, frames)
    return 0


if __name__ == "__main__":
    sys.exit(main())
