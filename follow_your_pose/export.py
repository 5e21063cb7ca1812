"""The model folder the training stages export and every loader reads: which base, which weights.

::

    DIR/base.json                  {"pretrained": hub id or absolute folder of the SD-1.x base, "revision": ...}
    DIR/pose_encoder/              ControlEncoder.save_pretrained (config.json + safetensors)
    DIR/unet/                      stage 2 (or a converted release): save_inflated (inflation.json + the weights
                                   stage 2 changes) or a full InflatedUNet.save_pretrained copy
    DIR/unet_conv_in.safetensors   stage 1 concat ablation only: the widened conv_in

Written by ``training.stage1``/``stage2`` and ``training.convert_official``; read by
:meth:`follow_your_pose.pipeline.FollowYourPosePipeline.from_export` (so ``training.generate --model`` and
``evaluation.run --model``) and by ``training.stage2 --init``.
"""

from __future__ import annotations

import json
from pathlib import Path

BASE_FILE = "base.json"
CONV_IN_FILE = "unet_conv_in.safetensors"


class ModelFolderError(ValueError):
    """A folder that is not an exported model; the message says what it is and what was expected."""


def base_reference(pretrained: str) -> str:
    """How an export names its base: a local folder as an absolute path, a hub id as is."""
    local = Path(pretrained)
    return str(local.resolve()) if local.exists() else pretrained


def write_base_reference(folder: Path, pretrained: str, revision: str | None) -> None:
    """``base.json``: which base model the exported weights go with."""
    (Path(folder) / BASE_FILE).write_text(json.dumps({"pretrained": base_reference(pretrained), "revision": revision}, indent=1))


def read_base_reference(folder: Path) -> tuple[str, str | None]:
    """``(base hub id or folder, revision)`` of an exported model folder."""
    path = Path(folder) / BASE_FILE
    if not path.is_file():
        raise ModelFolderError(f"{folder} has no {BASE_FILE}: not a model exported by training.stage1/stage2 or training.convert_official")
    values = json.loads(path.read_text())
    return values["pretrained"], values.get("revision")


EXPECTED = (
    "expected a model exported by training.stage1/stage2 or training.convert_official (base.json beside pose_encoder/ "
    "and/or unet/), its training run folder (holding model/), or a FollowYourPosePipeline.save_pretrained folder"
)


def resolve_model_folder(path: str | Path) -> tuple[str, Path]:
    """``("export" | "pipeline", folder)`` for what a user passes as ``--model``; anything else is a
    :class:`ModelFolderError` saying what the folder is and what was expected."""
    folder = Path(path)
    if not folder.is_dir():
        raise ModelFolderError(f"--model {folder}: {'a file, not a folder' if folder.exists() else 'no such folder'}; {EXPECTED}")
    if (folder / "model_index.json").is_file():
        kind = _json(folder / "model_index.json").get("_class_name")
        if kind == "FollowYourPosePipeline":
            return "pipeline", folder
        raise ModelFolderError(
            f"--model {folder} is a {kind or 'diffusers'} folder, not a Follow-Your-Pose model (a plain Stable Diffusion base "
            f"goes in --base or --model.pretrained); {EXPECTED}"
        )
    if (folder / BASE_FILE).is_file():
        reference = _json(folder / BASE_FILE)
        if not isinstance(reference.get("pretrained"), str) or not ((folder / "pose_encoder").is_dir() or (folder / "unet").is_dir()):
            raise ModelFolderError(f"--model {folder} has a {BASE_FILE} that is not an export's (no \"pretrained\" base, or no pose_encoder/ or unet/ beside it); {EXPECTED}")
        return "export", folder
    if (folder / "model" / BASE_FILE).is_file():
        return resolve_model_folder(folder / "model")
    raise ModelFolderError(f"--model {folder} holds no model; {EXPECTED}")


def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFolderError(f"{path} is not readable JSON ({error})") from None
    if not isinstance(value, dict):
        raise ModelFolderError(f"{path} is not a JSON object")
    return value
