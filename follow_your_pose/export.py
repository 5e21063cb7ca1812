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
