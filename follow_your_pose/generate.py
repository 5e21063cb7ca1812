"""Generate a pose-guided video from the command line.

    python -m training.generate --model DIR --prompt "Iron Man on the beach" --pose POSE \\
        --frames 32 --out OUT.mp4 [--steps 50] [--guidance-scale 12.5] [--seed 0] [--lora FILE]

``--model``: what ``training.stage1``/``training.stage2`` export (``DIR/base.json``,
``DIR/pose_encoder/``, stage 2's ``DIR/unet/``; see :mod:`follow_your_pose.pipeline`), or a
``FollowYourPosePipeline.save_pretrained`` folder (``model_index.json``).

``--pose``: a skeleton video (mp4, mov, webm, avi, mkv, gif), a folder of skeleton images (sorted by
name), or a pose sequence written by ``python -m pose_extraction.video`` (its folder, or its
``keypoints.json``/``keypoints.parquet``): the keypoints are placed in the output frame by ``--pose-fit``
(``contain`` by default, :func:`follow_your_pose.control_frames.fit_keypoints`), drawn by
:mod:`pose_extraction.skeleton`, and kept in the record as ground truth for pose metrics. Frames are checked to be
our skeletons (:mod:`pose_extraction.palette`): a video or a folder of photos of people gets its poses extracted
(``--pose-backend``, MediaPipe by default, ``--pose-options`` JSON) into ``OUT.poses/`` (``keypoints.json`` and
``pose.mp4``, itself a ``--pose`` input) and is generated from them; OpenPose/ControlNet rainbow skeletons are refused
unless ``--pose-force true``. ``--pose-fps R`` resamples the pose sequence to R frames a second (the frame on screen at
each time), then ``--pose-stride k`` keeps every k-th pose frame (the release read every 5th). Skeleton frames are brought to
the output size by ``--pose-preprocessing`` (:mod:`follow_your_pose.control_frames`): ``default``, the geometry our
training data use, or ``release``, the released inference's own (square outputs only). To reproduce a video
of the released weights (converted by ``training.convert_official``), pass ``--pose-preprocessing release
--pose-stride 5 --window F`` (one pass over all F frames, as the release) and the release's seed:
``--seed N`` draws the initial latents as the release does, ``torch.randn((1, 4, F, h, w),
generator=torch.Generator("cpu").manual_seed(N))``, on the CPU whatever the device, so a seed means the same
video everywhere.

Writes ``OUT.mp4`` and, beside it (:mod:`datasets.generated`), ``OUT.pose.mp4`` (the skeletons used)
and ``OUT.json`` (prompt, keypoints in output pixels or null, settings, model); ``--gif`` also writes
``OUT.gif``, ``--save-frames`` the frames losslessly as ``OUT.frames/00000.png ...``, ``--save-latents``
the final latents before decoding as ``OUT.latents.safetensors``. Every file is written under a temporary
name and renamed when complete.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from datasets import video_io
from datasets.atomic import atomic_path
from follow_your_pose.export import read_base_reference, resolve_model_folder
from datasets.hub import check_reachable
from follow_your_pose.pose_sources import PoseInput, read_pose_input

logger = logging.getLogger(__name__)

DEFAULT_FPS = 8.0
MP4_CRF = 16
"""x264 crf of the mp4s generation writes (preset medium, x264's default)."""


@dataclass(frozen=True, kw_only=True)
class GenerateConfig:
    """One generation run."""

    model: str = ""
    """Exported model folder (base.json + pose_encoder/ [+ unet/]) or a save_pretrained pipeline folder."""
    prompt: str = ""
    """What the video shows."""
    pose: str = ""
    """Skeleton video, folder of skeleton images, or pose sequence folder/file from pose_extraction.video."""
    out: str = ""
    """Output video path ending in .mp4; sidecars OUT.pose.mp4 and OUT.json are written beside it."""
    frames: int | None = None
    """Frames to generate (default: the whole pose sequence); longer than --window uses noise reuse."""
    negative_prompt: str = ""
    """Classifier-free guidance negative prompt (the release used the empty prompt)."""
    base: str | None = None
    """Override the base SD model named in DIR/base.json (hub id or folder)."""
    height: int | None = None
    """Output height in pixels (default: the base model's native size)."""
    width: int | None = None
    """Output width in pixels (default: the base model's native size)."""
    steps: int = 50
    """DDIM steps."""
    guidance_scale: float = 12.5
    """Classifier-free guidance scale (the paper's default; 1 disables guidance)."""
    eta: float = 0.0
    """DDIM eta (0: deterministic DDIM)."""
    conditioning_scale: float = 1.0
    """Pose conditioning scale (0 drops the pose)."""
    pose_guidance: bool = False
    """Pose to the conditional guidance branch only, so guidance amplifies it like the text (false: both branches, as
    the public release does)."""
    window: int = 8
    """Frames denoised together; longer videos run window by window."""
    overlap: int | None = None
    """Frames each window reuses from the previous one (default: window // 2, as in the paper; 0: independent windows)."""
    window_batch: int = 1
    """Long videos: denoise this many windows together, one UNet call per step for them all (the same video, fewer
    and larger calls: faster on a CPU or a GPU with room, memory grows with it); 1: one window after another."""
    pose_stride: int = 1
    """Keep every k-th pose frame (after pose_fps's resampling, when given)."""
    pose_fps: float | None = None
    """Resample the pose sequence to this rate first (a 30 fps phone video to the model's 8 fps): the frame on screen at
    i / pose_fps, the clip builder's rule (datasets.clips.displayed_frames); None keeps every source frame."""
    pose_fit: Literal["contain", "cover", "none"] = "contain"
    """Where keypoint inputs (pose sequences, poses extracted from a video) go in the output frame: contain scales and
    centres the box of all visible keypoints of the whole sequence into the frame less pose_margin, keeping its aspect;
    cover scales that box to fill the frame (cut points hidden); none maps the source frame through a resize-to-cover and
    centre crop. The default is contain: users' videos are often portrait phone videos whose centre square cuts off the
    head and feet (none), and one box for the whole sequence keeps the motion. Skeleton frames are not refitted."""
    pose_margin: float = 0.05
    """The margin pose_fit leaves on each side, as a fraction of the frame's width and height."""
    pose_backend: str = "mediapipe"
    """Pose estimator (pose_extraction.backends) run when --pose is a video or photos of people, not skeletons."""
    pose_options: dict | None = None
    """That backend's options, a JSON object (e.g. {"max_persons": 2}); see its config in pose_extraction."""
    pose_force: bool = False
    """Use the --pose frames as they are, without checking they are our skeletons (pose_extraction.palette): lets
    OpenPose-rainbow skeletons through (refused otherwise) and never extracts poses."""
    pose_preprocessing: Literal["default", "release"] = "default"
    """How skeleton frames reach the output size: default (our training data's cv2 geometry) or release (the released
    inference's float resize and centre crop, square only: use it to reproduce the release's videos)."""
    fps: float | None = None
    """Output frame rate (default: the pose sequence's rate divided by pose_stride, else 8)."""
    seed: int = 0
    """Random seed of the initial noise."""
    lora: str | None = None
    """A LoRA (file or folder) for the base UNet, loaded with load_lora_weights."""
    lora_scale: float = 1.0
    """Weight of the LoRA."""
    gif: bool = False
    """Also write OUT.gif."""
    save_frames: bool = False
    """Also write the frames losslessly as OUT.frames/00000.png, 00001.png, ..."""
    save_latents: bool = False
    """Also write the final latents before decoding, (1, 4, T, h, w) float32, as OUT.latents.safetensors (key "latents")."""
    device: str = "auto"
    """Torch device; auto picks cuda when available, else cpu."""
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    """Weights dtype; auto is float16 on cuda, float32 elsewhere."""
    offload: Literal["none", "model", "sequential"] = "none"
    """Keep the models on the CPU and move each to the device only while it runs: model (whole models, diffusers'
    enable_model_cpu_offload) or sequential (layer by layer: least device memory, slowest). Saves GPU memory only."""
    vae_slicing: bool = False
    """Decode one frame at a time (less memory, the same frames)."""
    vae_tiling: bool = False
    """Decode large frames tile by tile (far less memory at high resolution; tiles blend at their seams)."""
    key: str | None = None
    """Sample key carried into the record (default: the output file stem)."""
    toy: dict | None = None
    """Toy world only: what the video should show (colours, figure style, mask tolerance; see
    ``datasets.toy_world.reference``), kept in the record's settings for the toy metrics. A JSON object on the command line."""

    def __post_init__(self) -> None:
        if self.frames is not None and self.frames < 1:
            raise ValueError("frames must be positive")
        if self.steps < 1 or self.window < 2 or self.pose_stride < 1 or self.window_batch < 1:
            raise ValueError("steps must be >= 1, window >= 2, pose_stride >= 1, window_batch >= 1")
        if self.overlap is not None and not 0 <= self.overlap < self.window:
            raise ValueError("overlap must be between 0 and window - 1")
        if self.fps is not None and self.fps <= 0:
            raise ValueError("fps must be positive")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError("eta must be in [0, 1]")
        if self.pose_fps is not None and not 0 < self.pose_fps <= 240:
            raise ValueError("pose_fps must be in (0, 240]")
        if not 0 <= self.pose_margin < 0.5:
            raise ValueError("pose_margin must be in [0, 0.5)")
        self.pose_estimator_config()  # an unknown backend or option is refused before anything runs
        for side in (self.height, self.width):
            if side is not None and side < 8:
                raise ValueError("height and width must be at least 8")

    def pose_estimator_config(self):
        """The :class:`pose_extraction.backends.PoseConfig` of pose_backend and pose_options."""
        from pose_extraction.backends import PoseConfig

        return PoseConfig.of(self.pose_backend, **(self.pose_options or {}))

    def check_required(self) -> None:
        missing = [name for name in ("model", "prompt", "pose", "out") if not getattr(self, name)]
        if missing:
            raise ValueError("missing required options: " + ", ".join("--" + name for name in missing))
        if not self.out.endswith(".mp4"):
            raise ValueError(f"--out must end in .mp4 (evaluation reads OUT.mp4 + sidecars), got {self.out!r}")


def prepare_pose(config: GenerateConfig) -> PoseInput:
    """Read ``--pose``, check its frames are our skeletons (:mod:`pose_extraction.palette`; unless ``pose_force``):
    a video or photos of people get their poses extracted, rainbow skeletons are refused; then resample to pose_fps."""
    from follow_your_pose.pose_sources import resampled

    resample = config.pose_fps is not None
    stride, limit = (1, None) if resample else (config.pose_stride, config.frames)
    pose = read_pose_input(config.pose, stride=stride, limit=limit)
    if pose.frames is not None and not config.pose_force:
        from pose_extraction.palette import measure_frames

        colours = measure_frames(pose.frames)
        if colours.kind == "rainbow":
            raise ValueError(
                f"{config.pose} holds OpenPose/ControlNet-style rainbow skeletons ({colours.describe()}), not the "
                "MMPose-palette skeletons the model knows: pass the video of the person itself (its poses are extracted) "
                "or its keypoints (a pose_extraction.video folder), or --pose-force true to use them as they are"
            )
        if colours.kind == "photo":
            return extracted_pose(config, pose, colours.describe())
    return resampled(pose, config.pose_fps, config.pose_stride, config.frames) if resample else pose


def extracted_pose(config: GenerateConfig, pose: PoseInput, colours: str) -> PoseInput:
    """The poses of the video or photos of people ``pose`` holds, written as the pose-sequence folder OUT.poses/."""
    from follow_your_pose.pose_sources import extract_poses

    folder = Path(config.out).with_suffix(".poses")
    logger.info("%s is not a skeleton video (%s): extracting poses with %s into %s", config.pose, colours, config.pose_backend, folder)
    video = Path(config.pose).is_file()
    sequence = extract_poses(
        config.pose, None if video else pose.frames, folder, pose_config=config.pose_estimator_config(),
        fps=config.pose_fps, stride=config.pose_stride, limit=config.frames, folder_fps=config.fps or DEFAULT_FPS,
    )  # fmt: skip
    size = (int(sequence.header["width"]), int(sequence.header["height"]))
    return PoseInput(keypoints=sequence.keypoints, size=size, fps=sequence.fps, source=config.pose)


def write_video(frames: np.ndarray, path: str | Path, fps: float) -> Path:
    """Write ``(T, H, W, 3)`` uint8 frames as H.264 mp4 (yuv420p, crf 16) or gif, by the path's extension, atomically."""
    return video_io.write_video(frames, path, fps, crf=MP4_CRF, preset="medium")


def write_frames(frames: np.ndarray, folder: str | Path) -> Path:
    """Write ``(T, H, W, 3)`` uint8 frames as ``folder/00000.png ...`` (lossless); the folder appears complete or not at all."""
    import shutil

    from PIL import Image

    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp / f"{index:05d}.png")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)
    return folder


def write_latents(latents, path: str | Path) -> Path:
    """Write the final latents as a safetensors file (key ``latents``), atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({"latents": latents.detach().float().cpu().contiguous()}, str(tmp))
    return path


def resolve_device(device: str, dtype: str):
    """``(torch.device, torch.dtype)`` for the config's ``device`` and ``dtype`` ("auto" picks cuda + float16 when present)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if dtype == "auto":
        return resolved, torch.float16 if resolved.type == "cuda" else torch.float32
    return resolved, getattr(torch, dtype)


def load_pipeline(config: GenerateConfig):
    """The pipeline for ``--model`` (an export or a save_pretrained folder) on the configured device, LoRA applied."""
    from follow_your_pose.pipeline import FollowYourPosePipeline

    device, dtype = resolve_device(config.device, config.dtype)
    kind, folder = resolve_model_folder(config.model)
    if kind == "pipeline":
        pipeline = FollowYourPosePipeline.from_pretrained(folder, torch_dtype=dtype)
    else:
        pipeline = FollowYourPosePipeline.from_export(folder, base=config.base, torch_dtype=dtype)
    if config.lora:
        pipeline.load_lora_weights(config.lora, adapter_name="style")
        pipeline.set_adapters(["style"], adapter_weights=[config.lora_scale])
    if config.vae_slicing:
        pipeline.enable_vae_slicing()
    if config.vae_tiling:
        pipeline.enable_vae_tiling()
    if config.offload == "model":
        pipeline.enable_model_cpu_offload(device=device)
    elif config.offload == "sequential":
        pipeline.enable_sequential_cpu_offload(device=device)
    else:
        pipeline.to(device)
    return pipeline


def generate(config: GenerateConfig, pipeline=None) -> Path:
    """Run one generation and write OUT.mp4 + sidecars; return OUT.mp4's path."""
    config.check_required()
    if pipeline is None:  # a wrong --model or an unreachable base is refused before any pose is read
        kind, folder = resolve_model_folder(config.model)
        if kind == "export":
            check_reachable(config.base or read_base_reference(folder)[0], flag="--base" if config.base else f"the base of --model {folder}")
        if config.lora:
            check_reachable(config.lora, flag="--lora")
    import torch

    from datasets.generated import make_record, sidecar_paths, write_record
    from follow_your_pose.control_frames import fit_keypoints
    from pose_extraction.skeleton import render_sequence

    pose = prepare_pose(config)
    frames = config.frames or len(pose)
    if len(pose) < frames:
        raise ValueError(f"{config.pose} has {len(pose)} pose frames (after stride {config.pose_stride}), {frames} asked for")
    pipeline = pipeline or load_pipeline(config)
    native = pipeline.unet.config.sample_size * pipeline.vae_scale_factor
    height, width = config.height or native, config.width or native
    keypoints = None
    skeletons = pose.frames
    if pose.keypoints is not None:
        keypoints = fit_keypoints(pose.keypoints, pose.size, height, width, config.pose_fit, config.pose_margin)
        skeletons = render_sequence(keypoints, height, width)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    result = pipeline(
        config.prompt, skeletons, num_frames=frames, height=height, width=width,
        num_inference_steps=config.steps, guidance_scale=config.guidance_scale, negative_prompt=config.negative_prompt,
        eta=config.eta, conditioning_scale=config.conditioning_scale, pose_guidance=config.pose_guidance,
        pose_preprocessing=config.pose_preprocessing, pose_check=False, window_size=config.window, window_overlap=config.overlap,
        window_batch=config.window_batch,
        generator=generator, output_type="np",
    )  # fmt: skip
    fps = config.fps or pose.fps or DEFAULT_FPS
    video = (result.frames[0] * 255).round().astype(np.uint8)
    out = Path(config.out)
    pose_path, _ = sidecar_paths(out)
    write_video(result.pose_frames, pose_path, fps)
    if config.gif:
        write_video(video, out.with_suffix(".gif"), fps)
    if config.save_frames:
        write_frames(video, out.with_suffix(".frames"))
    if config.save_latents:
        write_latents(result.latents, out.with_suffix(".latents.safetensors"))
    record = make_record(
        prompt=config.prompt, keypoints_per_frame=None if keypoints is None else keypoints[:frames],
        width=width, height=height, frames=frames, fps=fps, model=config.model, settings=asdict(config),
        negative_prompt=config.negative_prompt, source=pose.source, key=config.key or out.name.removesuffix(".mp4"),
    )  # fmt: skip
    write_record(out, record)
    write_video(video, out, fps)  # last: OUT.mp4 appears only once its sidecars are complete
    return out
