"""Where the weights of a training run come from, and how an export names them.

The base model is a hub id or a local diffusers folder of an SD-1.x-shaped model
(``unet``, ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler``), or, for the
``tiny`` preset with no ``--model.pretrained``, a random tiny model built once
into ``OUTPUT/tiny-base`` by :mod:`follow_your_pose.tiny`. Its configs alone (no
weights) tell whether a resolution fits before anything loads. An export
names its base in ``base.json`` (the layout :mod:`follow_your_pose.pipeline` reads);
stage 2 starts from a stage-1 export (:func:`resolve_init`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from follow_your_pose import export
from follow_your_pose.export import BASE_FILE, base_reference, write_base_reference  # noqa: F401  (re-exported to the stages)
from training.config import ConfigError, TrainConfig

TINY_BASE = "tiny-base"


def check_hub(name: str, *, flag: str) -> str:
    """``name``, or a ConfigError in seconds when it is a hub id and the hub cannot be reached (:mod:`datasets.hub`)."""
    from datasets.hub import HubUnreachableError, check_reachable

    try:
        return check_reachable(name, flag=flag)
    except HubUnreachableError as error:
        raise ConfigError(str(error)) from None


def resolve_base(config: TrainConfig, *, is_main: bool) -> str:
    """The base model path or hub id: ``model.pretrained``, or the tiny random model in OUTPUT/tiny-base (built once)."""
    if config.model.pretrained:
        return check_hub(config.model.pretrained, flag="--model.pretrained")
    from follow_your_pose.tiny import TinySDConfig, save_tiny_sd, vae_factor

    folder = Path(config.output_dir) / TINY_BASE
    if is_main and not (folder / "model_index.json").is_file():
        tmp = folder.with_name(f".tmp-{TINY_BASE}-{os.getpid()}")
        model = config.model
        multiple = 8 * vae_factor(model.tiny_vae_channels)  # 8: the UNet's own downsampling
        tiny = TinySDConfig(
            seed=model.tiny_seed, sample_size=max(multiple, _round_up(config_resolution(config), multiple)),
            unet_channels=model.tiny_unet_channels, vae_channels=model.tiny_vae_channels,
            vae_log_variance=model.tiny_vae_log_variance,
        )  # fmt: skip
        save_tiny_sd(tmp, tiny)
        tmp.replace(folder)
    return str(folder)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def config_resolution(config: TrainConfig) -> int:
    return config.data.resolution


def latent_factors(pretrained: str, revision: str | None) -> tuple[int, int]:
    """``(VAE downscale factor, UNet down-block factor)`` read from the model's configs only (no weights loaded)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    try:
        vae = AutoencoderKL.load_config(pretrained, subfolder="vae", revision=revision)
        unet = UNet2DConditionModel.load_config(pretrained, subfolder="unet", revision=revision)
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read the base model {pretrained!r} (a hub id or a local diffusers folder): {error}") from error
    return 2 ** (len(vae["block_out_channels"]) - 1), 2 ** (len(unet["down_block_types"]) - 1)


def check_resolution(resolution: int, pretrained: str, revision: str | None) -> None:
    vae_factor, unet_factor = latent_factors(pretrained, revision)
    multiple = vae_factor * unet_factor
    if resolution % multiple:
        raise ConfigError(
            f"resolution {resolution} is not a multiple of {multiple} (VAE factor {vae_factor} x UNet down factor "
            f"{unet_factor} of {pretrained}); try {max(multiple, resolution // multiple * multiple)}"
        )


def load_base(pretrained: str, revision: str | None = None, *, unet_class=None, frozen_dtype=None) -> dict:
    """Tokenizer, text encoder, VAE, UNet (as ``unet_class``, default ``UNet2DConditionModel``) and the
    training noise scheduler of an SD-1.x-shaped model; text encoder and VAE in ``frozen_dtype`` (default fp32)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    unet_class = unet_class or UNet2DConditionModel
    kwargs = {"revision": revision}
    frozen = {"torch_dtype": frozen_dtype} if frozen_dtype not in (None, torch.float32) else {}
    return {
        "tokenizer": CLIPTokenizer.from_pretrained(pretrained, subfolder="tokenizer", **kwargs),
        "text_encoder": CLIPTextModel.from_pretrained(pretrained, subfolder="text_encoder", **kwargs, **frozen),
        "vae": AutoencoderKL.from_pretrained(pretrained, subfolder="vae", **kwargs, **frozen),
        "unet": unet_class.from_pretrained(pretrained, subfolder="unet", **kwargs),
        "noise_scheduler": DDPMScheduler.from_pretrained(pretrained, subfolder="scheduler", **kwargs),
    }


def read_base_reference(folder: Path) -> tuple[str, str | None]:
    """The base an export names (:func:`follow_your_pose.export.read_base_reference`), a missing one as a ConfigError."""
    try:
        return export.read_base_reference(folder)
    except export.ModelFolderError as error:
        raise ConfigError(str(error)) from None


def cast_frozen(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """Store the frozen parameters of ``module`` in ``dtype`` (mixed precision); trainable ones stay fp32."""
    for parameter in module.parameters():
        if not parameter.requires_grad:
            parameter.data = parameter.data.to(dtype)


def resolve_init(init: str) -> Path:
    """The exported stage-1 ``model`` folder from ``--init`` (the stage-1 output folder or its ``model`` folder)."""
    if not init:
        raise ConfigError("stage 2 starts from a stage-1 result: pass --init STAGE1_OUTPUT_DIR")
    for candidate in (Path(init), Path(init) / "model"):
        if (candidate / BASE_FILE).is_file() and (candidate / "pose_encoder").is_dir():
            return candidate
    raise ConfigError(f"--init {init}: no exported stage-1 model there (expected {BASE_FILE} and pose_encoder/ in it or in its model/)")
