"""``FollowYourPosePipeline``: text + a pose sequence to video frames, of any length.

Components: the SD-1.x ``vae``, ``text_encoder``, ``tokenizer`` and ``scheduler`` (DDIM), the
:class:`~follow_your_pose.models.inflated_unet.InflatedUNet` and the optional
:class:`~follow_your_pose.models.control_encoder.ControlEncoder`. Sampling is DDIM with ``eta``, classifier-free
guidance with a negative prompt (the pose features go to both branches, as in the public release; or,
with ``pose_guidance``, to the conditional branch only, so the guidance scale amplifies the pose as it
does the text, the way diffusers' ControlNet pipelines apply control in ``guess_mode``), a pose
conditioning scale and a seeded generator; clips longer than one window use the paper's noise-reuse scheme
(:mod:`follow_your_pose.long_video`). LoRAs for the base UNet load the standard way
(``pipeline.load_lora_weights``). ``save_pretrained``/``from_pretrained`` round-trip a full copy.

What the training stages export (``DIR``, read by :meth:`FollowYourPosePipeline.from_export` and
``python -m training.generate --model DIR``)::

    DIR/base.json                  {"pretrained": hub id or absolute folder of the SD-1.x base, "revision": ...}
    DIR/pose_encoder/              ControlEncoder.save_pretrained (config.json + safetensors)
    DIR/unet/                      stage 2 only: save_inflated (inflation.json + inflated_weights.safetensors)
    DIR/unet_conv_in.safetensors   stage 1 concat ablation only: the widened conv_in

A stage-1 export (no ``unet/``) generates with cross-frame attention and no temporal layers.
A folder with a ``model_index.json`` (a ``save_pretrained`` copy) loads with ``from_pretrained``.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from diffusers.utils import BaseOutput
from PIL import Image

from follow_your_pose.control_frames import prepare_frames, to_uint8
from follow_your_pose.export import BASE_FILE, CONV_IN_FILE
from follow_your_pose.long_video import padded_length, plan_windows, sample_windows
from follow_your_pose.models.control_encoder import (
    ControlEncoder,
    ControlEncoderOutput,
    control_unet_inputs,
    fold_frames,
    repeat_features,
    unfold_frames,
    with_unconditional_zeros,
)  # fmt: skip
from follow_your_pose.models.inflated_unet import (
    InflatedUNet,
    InflationConfig,
    load_inflated,
)

DEFAULT_WINDOW = 8


@dataclass
class FollowYourPoseOutput(BaseOutput):
    """What the pipeline returns, batch first as diffusers' video pipelines do (``B`` = prompts x videos per prompt).

    ``frames``: ``B`` lists of ``T`` PIL images (``pil``), a ``(B, T, H, W, 3)`` float array in [0, 1] (``np``), a
    ``(B, T, 3, H, W)`` tensor (``pt``), or the latents ``(B, 4, T, h, w)`` (``latent``). ``pose_frames``: the
    ``(T, H, W, 3)`` uint8 skeletons every video was conditioned on (None without pose). ``latents``: the final
    latents before decoding, ``(B, 4, T, h, w)``."""

    frames: np.ndarray | list | torch.Tensor
    pose_frames: np.ndarray | None = None
    latents: torch.Tensor | None = None


def check_skeletons(frames: torch.Tensor) -> None:
    """Refuse ``(T, 3, H, W)`` pose frames that are not our skeletons (:func:`pose_extraction.palette.measure_frames`)."""
    from pose_extraction.palette import measure_frames

    kind = measure_frames(to_uint8(frames)).kind
    if kind != "ours":
        seen = "a photo or video (not skeletons)" if kind == "photo" else "skeletons in another palette (the OpenPose/ControlNet rainbow)"
        raise ValueError(
            f"the pose frames look like {seen}, not the COCO-17 skeletons on black this model follows: for a video or "
            "photos of a person pass them to training.generate --pose (it extracts the poses; in Python "
            "follow_your_pose.pose_sources.extract_poses), for other skeletons pass their keypoints; pose_check=False "
            "uses the frames as they are"
        )


def join_unet_inputs(parts: list[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, dict]:
    """The UNet inputs of several windows (:func:`control_unet_inputs` of each) side by side in one batch."""
    if len(parts) == 1:
        return parts[0]
    samples, kwargs = zip(*parts)
    joined = {name: [torch.cat(levels) for levels in zip(*(k[name] for k in kwargs))] for name in kwargs[0]}
    return torch.cat(samples), joined


def render_keypoints(keypoints_per_frame, source_size: tuple[int, int], height: int, width: int):
    """Map COCO-17 keypoints of ``source_size = (width, height)`` frames through the same resize +
    center crop to ``(height, width)`` and draw them: ``(skeleton frames, mapped keypoints)``."""
    from datasets.clips import CropGeometry
    from pose_extraction.skeleton import render_sequence, scale_keypoints

    geometry = CropGeometry(int(source_size[0]), int(source_size[1]), width, height)
    offset_x, offset_y = geometry.offset
    mapped = [scale_keypoints(k, geometry.scale, geometry.scale, offset_x, offset_y) for k in keypoints_per_frame]
    return render_sequence(mapped, height, width), mapped


class FollowYourPosePipeline(DiffusionPipeline, StableDiffusionLoraLoaderMixin):
    """Pose-guided text-to-video generation (see the module docstring)."""

    model_cpu_offload_seq = "text_encoder->pose_encoder->unet->vae"
    _optional_components = ["pose_encoder"]

    def __init__(self, vae: AutoencoderKL, text_encoder, tokenizer, unet: UNet2DConditionModel, scheduler, pose_encoder: ControlEncoder | None = None):
        super().__init__()
        self.register_modules(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler, pose_encoder=pose_encoder
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)

    @classmethod
    def from_export(cls, directory: str | Path, *, base: str | None = None, torch_dtype: torch.dtype | None = None):
        """Load what a training stage exported (layout in the module docstring) on its base model."""
        from safetensors.torch import load_file
        from transformers import CLIPTextModel, CLIPTokenizer

        from follow_your_pose.models.control_encoder import expand_conv_in

        directory = Path(directory)
        if not (directory / BASE_FILE).is_file():
            raise FileNotFoundError(f"{directory} has no {BASE_FILE}: not a model exported by training.stage1/stage2")
        reference = json.loads((directory / BASE_FILE).read_text())
        base, revision = base or reference["pretrained"], reference.get("revision")
        dtype = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
        if (directory / "unet").is_dir():
            unet = load_inflated(directory / "unet", base=base, torch_dtype=torch_dtype)
        else:
            unet = InflatedUNet.from_pretrained(base, subfolder="unet", revision=revision, **dtype)
            if (directory / CONV_IN_FILE).is_file():
                weights = load_file(str(directory / CONV_IN_FILE))
                expand_conv_in(unet, weights["weight"].shape[1] - unet.conv_in.in_channels)
                unet.conv_in.load_state_dict({k: v.to(unet.dtype) for k, v in weights.items()})
            unet.inflate(InflationConfig(temporal_attention=False, temporal_conv=False))
        pose_encoder = None
        if (directory / "pose_encoder").is_dir():
            pose_encoder = ControlEncoder.from_pretrained(directory / "pose_encoder", **dtype)
        return cls(
            vae=AutoencoderKL.from_pretrained(base, subfolder="vae", revision=revision, **dtype),
            text_encoder=CLIPTextModel.from_pretrained(base, subfolder="text_encoder", revision=revision, **dtype),
            tokenizer=CLIPTokenizer.from_pretrained(base, subfolder="tokenizer", revision=revision),
            unet=unet,
            scheduler=DDIMScheduler.from_pretrained(base, subfolder="scheduler", revision=revision),
            pose_encoder=pose_encoder,
        )

    def encode_prompt(self, prompt: str | list[str], negative_prompt: str | list[str] | None, guidance: bool, videos_per_prompt: int = 1) -> torch.Tensor:
        """Text embeddings ``(B, L, D)``, or ``(2B, L, D)`` as ``[negatives, prompts]`` under guidance, each prompt
        repeated ``videos_per_prompt`` times (B = prompts x videos per prompt)."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        negatives = negative_prompt if isinstance(negative_prompt, list) else [negative_prompt or ""] * len(prompts)
        if len(negatives) != len(prompts):
            raise ValueError(f"{len(negatives)} negative prompts for {len(prompts)} prompts")
        texts = (negatives + prompts) if guidance else prompts
        ids = self.tokenizer(
            texts, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        embeddings = self.text_encoder(ids.to(self._execution_device))[0].to(self.unet.dtype)
        return embeddings.repeat_interleave(videos_per_prompt, dim=0)

    def encode_pose(self, pose: torch.Tensor | None, scale: float, batch: int, guidance: bool, guided: bool = False) -> ControlEncoderOutput | None:
        """Pose features of ``(T, 3, H, W)`` skeleton floats in [0, 1] for ``batch`` videos, and for both branches
        under ``guidance`` (unconditional half first); ``guided``: zeros in the unconditional half, so classifier-free
        guidance pushes towards the pose as well as the text."""
        if self.pose_encoder is None or pose is None:
            return None
        clip = pose.to(self._execution_device, self.pose_encoder.dtype).permute(1, 0, 2, 3)[None]  # (1, 3, T, H, W)
        features = self.pose_encoder(clip, conditioning_scale=scale)
        if guidance and guided:
            return with_unconditional_zeros(repeat_features(features, batch))
        return repeat_features(features, 2 * batch if guidance else batch)

    def predict_noise(self, sample: torch.Tensor, t, text: torch.Tensor, kwargs: dict) -> torch.Tensor:
        """The UNet's prediction for ``(B, C, F, h, w)`` latents. An :class:`InflatedUNet` takes the clip; a plain 2-D
        ``UNet2DConditionModel`` (a stage-0 or stage-1 model during training) sees the frames as a batch."""
        if isinstance(self.unet, InflatedUNet):
            return self.unet(sample, t, encoder_hidden_states=text, **kwargs).sample
        frames = sample.shape[2]
        folded = self.unet(fold_frames(sample), t, encoder_hidden_states=text.repeat_interleave(frames, dim=0), **kwargs).sample
        return unfold_frames(folded, frames)

    def _step_kwargs(self, generator, eta: float) -> dict:
        parameters = set(inspect.signature(self.scheduler.step).parameters)
        return {k: v for k, v in (("eta", eta), ("generator", generator)) if k in parameters}

    def enable_vae_slicing(self) -> None:
        """Decode one frame at a time (frames already decode ``decode_chunk_size`` at a time): less memory, same frames."""
        self.vae.enable_slicing()

    def disable_vae_slicing(self) -> None:
        self.vae.disable_slicing()

    def enable_vae_tiling(self) -> None:
        """Decode large frames tile by tile (diffusers' ``AutoencoderKL`` tiling): far less memory at high resolution."""
        self.vae.enable_tiling()

    def disable_vae_tiling(self) -> None:
        self.vae.disable_tiling()

    def decode_latents(self, latents: torch.Tensor, chunk: int) -> torch.Tensor:
        """``(B, 4, T, h, w)`` latents to ``(B, T, 3, H, W)`` floats in [0, 1], ``chunk`` frames at a time."""
        videos = []
        for video in latents:
            flat = video.permute(1, 0, 2, 3) / self.vae.config.scaling_factor
            images = [self.vae.decode(part.to(self.vae.dtype)).sample.float() for part in flat.split(chunk)]
            videos.append(torch.cat(images).div_(2).add_(0.5).clamp_(0, 1))  # in place: one video-sized tensor
        return torch.stack(videos)

    _callback_tensor_inputs = ["latents"]

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        pose=None,
        *,
        pose_keypoints: list | None = None,
        keypoint_size: tuple[int, int] | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 12.5,
        negative_prompt: str | list[str] | None = None,
        num_videos_per_prompt: int = 1,
        eta: float = 0.0,
        conditioning_scale: float = 1.0,
        pose_guidance: bool = False,
        pose_preprocessing: str = "default",
        pose_check: bool = True,
        window_size: int = DEFAULT_WINDOW,
        window_overlap: int | None = None,
        window_batch: int = 1,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
        decode_chunk_size: int = 8,
    ):
        """Generate ``num_frames`` frames for each prompt following ``pose``, with diffusers' conventions.

        ``prompt``: one or a list (``negative_prompt`` alike), ``num_videos_per_prompt`` videos each, all following
        the same pose. ``pose``: skeleton frames (``(T, H, W, 3)`` uint8 array, list of PIL images, a
        ``(T, 3, H, W)`` or ``(1, 3, T, H, W)`` tensor in [0, 1], never re-quantised), brought to the output size by
        ``pose_preprocessing`` (:mod:`follow_your_pose.control_frames`: ``default`` or the ``release``'s); or
        ``pose_keypoints`` (one COCO-17 ``(P, 17, 3)`` array per frame, pixels of ``keypoint_size = (width,
        height)`` frames), drawn by :mod:`pose_extraction.skeleton`. ``num_frames`` defaults to the pose length;
        clips up to ``window_size`` frames are denoised in one pass, longer ones window by window reusing the last
        ``window_overlap`` (default half) frames' noise as prior; ``window_batch`` windows at a time in lockstep, one UNet
        call per step for them all (:mod:`follow_your_pose.long_video`: the same video, fewer calls, that many windows
        in memory). ``pose_guidance``: the pose goes to the
        conditional branch only (see the module docstring). ``pose_check``: refuse pose frames that are not our
        skeletons (:mod:`pose_extraction.palette`: a photo or video of a person, another palette's skeletons), which
        the model would take as pixels; False uses any frames as they are. ``latents``: initial latents ``(B, C, num_frames, h,
        w)``; without them they are drawn from ``generator`` (on the CPU when it is None) as ``torch.randn`` of that
        shape, the release's draw, so a CPU generator seeded N gives the release's video. ``output_type``: ``pil``
        (default), ``np``, ``pt`` or ``latent`` (:class:`FollowYourPoseOutput`); ``return_dict=False`` returns
        ``(frames,)``. ``callback_on_step_end(pipeline, step, timestep, tensors)`` is called after every denoising
        step of every window (``step`` counts them all) with the ``callback_on_step_end_tensor_inputs`` it asks for
        (``latents``); the ``latents`` it returns replace the current ones.
        """
        if output_type not in ("np", "pil", "pt", "latent"):
            raise ValueError(f"output_type must be np, pil, pt or latent, got {output_type!r}")
        unknown = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown or num_videos_per_prompt < 1:
            raise ValueError(f"callback tensor inputs must be among {self._callback_tensor_inputs} (got {sorted(unknown)}), num_videos_per_prompt >= 1")
        height, width = self._check_size(height, width)
        skeletons = self._skeletons(pose, pose_keypoints, keypoint_size, height, width, pose_preprocessing)
        if pose_check and pose is not None and skeletons is not None:
            check_skeletons(skeletons)
        available = None if skeletons is None else len(skeletons)
        num_frames = num_frames or available or (latents.shape[2] if latents is not None else window_size)
        if available is not None and num_frames > available:
            raise ValueError(f"the pose sequence has {available} frames, {num_frames} were asked for")
        windows = plan_windows(num_frames, window_size, window_overlap)
        padded_pose = None
        if skeletons is not None:
            skeletons = skeletons[:num_frames]
            extra = padded_length(windows) - num_frames  # the last window runs past the end: hold the last pose
            padded_pose = torch.cat([skeletons, skeletons[-1:].expand(extra, -1, -1, -1)])
        guidance = guidance_scale > 1.0
        text = self.encode_prompt(prompt, negative_prompt, guidance, num_videos_per_prompt)
        batch = text.shape[0] // (2 if guidance else 1)
        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        step_kwargs = self._step_kwargs(generator, eta)
        features: dict[int, ControlEncoderOutput | None] = {}
        done = [0]

        def step(group_latents: list[torch.Tensor], t, group) -> list[torch.Tensor]:
            if any(window.index not in features for window in group):  # encode each window's pose once
                features.clear()
                for window in group:
                    pose = None if padded_pose is None else padded_pose[window.start : window.stop]
                    features[window.index] = self.encode_pose(pose, conditioning_scale, batch, guidance, pose_guidance)
            latents = torch.cat(group_latents)  # the windows side by side in the batch
            model_input = self.scheduler.scale_model_input(latents, t)
            parts = [control_unet_inputs(torch.cat([part] * 2) if guidance else part, features[window.index])
                     for part, window in zip(model_input.chunk(len(group)), group)]  # fmt: skip
            sample, kwargs = join_unet_inputs(parts)
            noise = self.predict_noise(sample, t, text.repeat(len(group), 1, 1), kwargs)
            if guidance:
                uncond, cond = noise.unflatten(0, (len(group), 2, -1)).unbind(1)
                noise = (uncond + guidance_scale * (cond - uncond)).flatten(0, 1)
            group_latents = list(self.scheduler.step(noise, t, latents, **step_kwargs).prev_sample.chunk(len(group)))
            for k in range(len(group)):
                if callback_on_step_end is not None:
                    asked = {name: {"latents": group_latents[k]}[name] for name in callback_on_step_end_tensor_inputs}
                    group_latents[k] = (callback_on_step_end(self, done[0], t, asked) or {}).get("latents", group_latents[k])
                done[0] += 1
            return group_latents

        make_noise = self._noise_maker(batch, height, width, generator, latents, num_frames)
        with self.progress_bar(total=len(windows) * len(self.scheduler.timesteps)) as bar:
            latents = sample_windows(windows, self.scheduler.timesteps, make_noise, step, lambda w, i: bar.update(), window_batch)
        features.clear()  # the pose features are not needed while decoding
        output = self._output(latents[:, :, :num_frames], skeletons, output_type, decode_chunk_size)
        return output if return_dict else (output.frames,)

    def _check_size(self, height: int | None, width: int | None) -> tuple[int, int]:
        native = self.unet.config.sample_size * self.vae_scale_factor
        height, width = height or native, width or native
        multiple = self.vae_scale_factor * 2 ** (len(self.unet.config.down_block_types) - 1)
        if height % multiple or width % multiple:
            raise ValueError(f"height and width must be multiples of {multiple}, got {height}x{width}")
        return height, width

    def _noise_maker(self, batch: int, height: int, width: int, generator, latents: torch.Tensor | None, num_frames: int):
        """``n -> (B, C, n, h, w)``: the next ``n`` frames of initial latents, taken in order from ``latents`` (when
        given) and drawn from ``generator`` (on its device) past their end (the padding of a last long-video window)."""
        channels = self.unet.config.out_channels
        size = (height // self.vae_scale_factor, width // self.vae_scale_factor)
        device = generator.device if generator is not None else torch.device("cpu")
        given = None
        if latents is not None:
            if latents.ndim != 5 or tuple(latents.shape[:2]) != (batch, channels) or tuple(latents.shape[3:]) != size or latents.shape[2] < num_frames:
                raise ValueError(f"latents must be ({batch}, {channels}, >= {num_frames}, {size[0]}, {size[1]}), got {tuple(latents.shape)}")
            given = [latents]

        def make_noise(count: int) -> torch.Tensor:
            parts = []
            if given and given[0].shape[2]:
                parts.append(given[0][:, :, :count])
                given[0] = given[0][:, :, count:]
            if (missing := count - sum(p.shape[2] for p in parts)) > 0:
                parts.append(torch.randn((batch, channels, missing, *size), generator=generator, device=device))
            noise = torch.cat([p.to(self._execution_device, self.unet.dtype) for p in parts], dim=2)
            return noise * self.scheduler.init_noise_sigma

        return make_noise

    def _output(self, latents: torch.Tensor, pose: torch.Tensor | None, output_type: str, chunk: int) -> FollowYourPoseOutput:
        skeletons = None if pose is None else to_uint8(pose)
        if output_type == "latent":
            return FollowYourPoseOutput(frames=latents, pose_frames=skeletons, latents=latents)
        frames = self.decode_latents(latents, chunk)  # (B, T, 3, H, W)
        self.maybe_free_model_hooks()
        if output_type == "pt":
            return FollowYourPoseOutput(frames=frames, pose_frames=skeletons, latents=latents)
        array = frames.permute(0, 1, 3, 4, 2).cpu().numpy()
        if output_type == "pil":
            array = [[Image.fromarray((a * 255).round().astype(np.uint8)) for a in video] for video in array]
        return FollowYourPoseOutput(frames=array, pose_frames=skeletons, latents=latents)

    def _skeletons(self, pose, pose_keypoints, keypoint_size, height: int, width: int, preprocessing: str) -> torch.Tensor | None:
        """The pose as ``(T, 3, height, width)`` floats in [0, 1] (None without pose)."""
        if pose is not None and pose_keypoints is not None:
            raise ValueError("pass either pose frames or pose_keypoints, not both")
        if pose_keypoints is not None:
            if keypoint_size is None:
                raise ValueError("pose_keypoints need keypoint_size=(width, height) of the frames they were measured on")
            pose = render_keypoints(pose_keypoints, keypoint_size, height, width)[0]
        if pose is None:
            return None
        skeletons = prepare_frames(pose, height, width, preprocessing)
        if len(skeletons) == 0:
            raise ValueError("the pose sequence is empty")
        return skeletons
