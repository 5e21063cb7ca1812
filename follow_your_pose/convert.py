"""Convert the authors' released Follow-Your-Pose weights into this project's model layout.

    python -m training.convert_official --checkpoint PATH_OR_HUB_ID --base PATH_OR_HUB_ID --output DIR

``--checkpoint`` takes any of the release's forms: its accelerate checkpoint folder
(``followyourpose_checkpoint-1000/`` with ``pytorch_model.bin`` or ``model.safetensors``), a bare
``pytorch_model.bin``, the ``save_pretrained`` 3-D UNet folder (or the pipeline folder holding it) that
its training script writes, its whole ``checkpoints/`` folder, or the hub id of its weights
(``YueMafighting/FollowYourPose_v1``). ``--base`` is the SD-1.4 model it was trained on (hub id or
diffusers folder); it may be left out when the checkpoint folder holds ``stable-diffusion-v1-4/``.

The pose encoder is taken from the checkpoint's ``skeleton_adapter.*``, the copy the release's inference
actually uses; ``pose_encoder.pth`` (``--pose-encoder``, or found beside the checkpoint) is the fallback,
and a warning says when both exist and differ. Every shape is checked against the base; when every weight
stage 2 never trains equals the base's, DIR holds only what stage 2 changed (a few MB at SD size), otherwise
a full copy of the UNet. Files are read weights-only (nothing but tensors is unpickled). DIR is the export
layout that ``training.generate --model``, ``evaluation.run --model`` and ``training.stage2 --init`` read
(see :mod:`follow_your_pose.pipeline`), plus ``conversion.json`` saying what was converted and checked.
Bad input ends with one line naming the problem and exit status 2.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from datasets.hub import check_reachable
from follow_your_pose.models.release import ReleaseFormatError

logger = logging.getLogger(__name__)

CHECKPOINT_FILES = ("pytorch_model.bin", "model.safetensors")
UNET_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
POSE_ENCODER_FILE = "pose_encoder.pth"
BASE_FOLDER = "stable-diffusion-v1-4"
HUB_PATTERNS = ["*followyourpose_checkpoint*/pytorch_model.bin", "*followyourpose_checkpoint*/model.safetensors", f"*{POSE_ENCODER_FILE}"]
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@dataclass(frozen=True, kw_only=True)
class ConvertConfig:
    """One conversion."""

    checkpoint: str = ""
    """The release's weights: accelerate checkpoint folder, pytorch_model.bin, save_pretrained 3-D UNet folder, its checkpoints/ folder, or a hub id."""
    base: str = ""
    """The SD-1.4 base it was trained on (hub id or diffusers folder); default: stable-diffusion-v1-4/ beside the checkpoint."""
    output: str = ""
    """Folder to write the converted model to (must not exist unless overwrite)."""
    pose_encoder: str | None = None
    """The release's pose_encoder.pth (fallback when the checkpoint has no skeleton_adapter.*); default: found beside the checkpoint."""
    revision: str | None = None
    """Hub revision of the base."""
    overwrite: bool = False
    """Replace an existing output folder."""

    def check_required(self) -> None:
        missing = [name for name in ("checkpoint", "output") if not getattr(self, name)]
        if missing:
            raise ReleaseFormatError("missing required options: " + ", ".join("--" + name for name in missing))


@dataclass(frozen=True)
class Source:
    """Where the release's files were found."""

    weights: Path
    unet_config: Path | None = None
    pose_encoder: Path | None = None
    base: Path | None = None


def _newest_checkpoint(folder: Path) -> Path | None:
    candidates = [p for p in folder.glob("followyourpose_checkpoint-*") if p.is_dir()]
    steps = {p: int(m.group(1)) for p in candidates if (m := re.search(r"-(\d+)$", p.name))}
    return max(steps, key=steps.get) if steps else None


def _first(folder: Path, names) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def _beside(*folders: Path) -> Path | None:
    return next((f / POSE_ENCODER_FILE for f in folders if (f / POSE_ENCODER_FILE).is_file()), None)


def _base_beside(folder: Path) -> Path | None:
    return folder / BASE_FOLDER if (folder / BASE_FOLDER / "model_index.json").is_file() else None


def locate(checkpoint: str) -> Source:
    """Find the weights (and pose_encoder.pth, and a base folder) in any of the release's layouts."""
    path = Path(checkpoint).expanduser()
    if not path.exists():
        if _HUB_ID.fullmatch(checkpoint) and not checkpoint.startswith((".", "~")):
            path = _download(checkpoint)
        else:
            raise ReleaseFormatError(f"--checkpoint {checkpoint}: no such file or folder (nor a hub id)")
    if path.is_file():
        return Source(path, pose_encoder=_beside(path.parent, path.parent.parent))
    if (path / "model_index.json").is_file() and (path / "unet").is_dir():
        path = path / "unet"
    if (path / "config.json").is_file() and (weights := _first(path, UNET_FILES)):
        return Source(weights, unet_config=path / "config.json", pose_encoder=_beside(path.parent, path.parent.parent))
    if weights := _first(path, CHECKPOINT_FILES):
        return Source(weights, pose_encoder=_beside(path.parent, path), base=_base_beside(path.parent))
    if (newest := _newest_checkpoint(path)) and (weights := _first(newest, CHECKPOINT_FILES)):
        return Source(weights, pose_encoder=_beside(path), base=_base_beside(path))
    raise ReleaseFormatError(
        f"--checkpoint {path}: not the release's weights (expected an accelerate checkpoint folder with "
        f"{' or '.join(CHECKPOINT_FILES)}, a save_pretrained UNet folder with config.json and "
        f"{' or '.join(UNET_FILES)}, or a checkpoints/ folder holding followyourpose_checkpoint-N/)"
    )


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS))
    except Exception as error:
        reason = " ".join(str(error).split())[:160]
        raise ReleaseFormatError(f"cannot fetch {repo_id} from the hub ({type(error).__name__}: {reason}); pass a local folder") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_base_unet(base: str, revision: str | None, inflation):
    from diffusers import UNet2DConditionModel

    from follow_your_pose.models.inflated_unet import InflatedUNet

    try:
        config = UNet2DConditionModel.load_config(base, subfolder="unet", revision=revision)
    except Exception as error:
        reason = " ".join(str(error).split())[:160]
        raise ReleaseFormatError(f"--base {base}: cannot read a Stable Diffusion UNet config there ({reason})") from None
    if config.get("use_linear_projection") or isinstance(config.get("attention_head_dim"), (list, tuple)):
        raise ReleaseFormatError(
            f"--base {base} is a Stable Diffusion 2.x-style UNet (linear projections, per-block head sizes); "
            "the release is built on Stable Diffusion 1.4 (CompVis/stable-diffusion-v1-4)"
        )
    return InflatedUNet.from_pretrained(base, subfolder="unet", revision=revision).inflate(inflation)


def _check_3d_config(path: Path, base_config) -> None:
    """A save_pretrained 3-D UNet's config must describe the base's 2-D UNet."""
    config = json.loads(path.read_text())
    for key in ("block_out_channels", "cross_attention_dim", "layers_per_block", "in_channels", "attention_head_dim"):
        ours, theirs = base_config.get(key), config.get(key)
        if theirs is not None and list(ours if isinstance(ours, (list, tuple)) else [ours]) != list(theirs if isinstance(theirs, (list, tuple)) else [theirs]):
            raise ReleaseFormatError(f"{path}: {key} is {theirs}, the base UNet's is {ours}: not the base this checkpoint was trained on")


def _inflation_for(unet_state: dict):
    from follow_your_pose.models.inflated_unet import InflationConfig
    from follow_your_pose.models.release import temporal_conv_shape

    if not any(".attn_temp." in key for key in unet_state):
        raise ReleaseFormatError("the checkpoint has no temporal layers (no *.attn_temp.* keys): not a stage-2 Follow-Your-Pose UNet")
    shape = temporal_conv_shape(unet_state)
    if shape is None:
        raise ReleaseFormatError("the checkpoint has temporal attention but no temporal conv (no *.conv_temporal.* keys)")
    rank, kernel = shape
    widest = max(v.shape[1] for k, v in unet_state.items() if k.endswith("conv_temporal.down.weight"))
    release = InflationConfig.release()
    if widest < release.temporal_conv_rank and rank == widest // 2:
        rank = release.temporal_conv_rank  # every block narrower than 160: the release's C // 2 rule, rank 160
    return InflationConfig(temporal_conv_kind="low_rank", temporal_conv_rank=rank, temporal_kernel_size=kernel, clip_group_norm=True)


def _mapped_unet_state(unet_state: dict, expected: dict, base: str) -> dict:
    from follow_your_pose.models.release import unet_key

    ours = {unet_key(k): v for k, v in unet_state.items()}
    missing = sorted(set(expected) - set(ours))
    unexpected = sorted(set(ours) - set(expected))
    if missing:
        raise ReleaseFormatError(f"the checkpoint lacks {len(missing)} of the model's {len(expected)} UNet tensors, e.g. {', '.join(missing[:3])}")
    if unexpected:
        raise ReleaseFormatError(f"the checkpoint has {len(unexpected)} tensors the release's UNet does not, e.g. {', '.join(unexpected[:3])}")
    wrong = [k for k in expected if tuple(ours[k].shape) != tuple(expected[k].shape)]
    if wrong:
        key = wrong[0]
        raise ReleaseFormatError(
            f"{len(wrong)} checkpoint tensors do not fit the base {base}, e.g. {key} {tuple(ours[key].shape)} vs "
            f"{tuple(expected[key].shape)}: the release is built on Stable Diffusion 1.4 (an SD 2.x or other base does not fit)"
        )
    return ours


def _pose_encoder(adapter: dict, pth: Path | None, channels: tuple[int, ...], source: Path, warnings: list[str]):
    from follow_your_pose.models.control_encoder import ControlEncoder
    from follow_your_pose.models.release import (
        adapter_layout,
        pose_encoder_state,
        read_state_dict,
        strip_ddp_prefix,
    )

    separate = strip_ddp_prefix(read_state_dict(pth)) if pth is not None else None
    if adapter and separate is not None:
        differ = set(adapter) != set(separate) or any(not _equal(adapter[k], separate[k]) for k in adapter)
        if differ:
            warnings.append(f"the pose encoder in {source} (skeleton_adapter.*) differs from {pth}: using the checkpoint's, as the release's inference does")
    chosen = adapter or separate
    if not chosen:
        raise ReleaseFormatError(f"no pose encoder: {source} has no skeleton_adapter.* and no {POSE_ENCODER_FILE} was found (pass --pose-encoder)")
    layout = adapter_layout(chosen, levels=len(channels))
    if layout["channels"] != tuple(channels):
        raise ReleaseFormatError(f"the pose encoder's level widths {layout['channels']} do not match the UNet's {tuple(channels)}")
    encoder = ControlEncoder(**layout, zero_init=False)
    state = pose_encoder_state(chosen, layout["num_res_blocks"], {k: channels[int(k)] for k in encoder.out_convs})
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ReleaseFormatError(f"the pose encoder's tensors do not fit a T2I-Adapter full adapter: {str(error).splitlines()[0]}") from None
    return encoder.eval()


def _equal(a, b) -> bool:
    return a.shape == b.shape and bool((a.float() == b.float()).all())


def convert(config: ConvertConfig) -> Path:
    """Convert (see the module docstring); return the output folder."""
    from follow_your_pose.export import write_base_reference
    from follow_your_pose.models.release import read_state_dict, split_adapter

    config.check_required()
    output = Path(config.output)
    if output.exists() and not config.overwrite and any(output.iterdir()):
        raise ReleaseFormatError(f"--output {output} exists and is not empty (pass --overwrite true to replace it)")
    source = locate(check_reachable(config.checkpoint, flag="--checkpoint"))
    base = check_reachable(config.base, flag="--base") or (str(source.base) if source.base else "")
    if not base:
        raise ReleaseFormatError("--base is required: the SD-1.4 model the checkpoint was trained on (hub id or folder)")
    from follow_your_pose.models.inflated_unet import _is_stage2, save_inflated  # diffusers: only once the inputs are found

    unet_state, adapter = split_adapter(read_state_dict(source.weights))
    inflation = _inflation_for(unet_state)
    unet = _load_base_unet(base, config.revision, inflation)
    if source.unet_config is not None:
        _check_3d_config(source.unet_config, unet.config)
    base_state = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    ours = _mapped_unet_state(unet_state, base_state, base)
    unet.load_state_dict(ours, strict=True)
    warnings: list[str] = []
    pose_path = Path(config.pose_encoder) if config.pose_encoder else source.pose_encoder
    if pose_path is not None and not pose_path.is_file():
        raise ReleaseFormatError(f"--pose-encoder {pose_path}: no such file")
    encoder = _pose_encoder(adapter, pose_path, tuple(unet.config.block_out_channels), source.weights, warnings)
    changed = sorted(k for k in base_state if not _is_stage2(k) and not _equal(ours[k], base_state[k]))
    for warning in warnings:
        logger.warning(warning)
    if changed:
        logger.warning("%d weights stage 2 never trains differ from the base's (e.g. %s): writing a full UNet copy", len(changed), changed[0])
    tmp = output.with_name(f".{output.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if changed:
        unet.save_pretrained(tmp / "unet", safe_serialization=True)
    else:
        save_inflated(unet, tmp / "unet", base=_reference(base), revision=config.revision)
    encoder.save_pretrained(tmp / "pose_encoder", safe_serialization=True)
    write_base_reference(tmp, base, config.revision)
    record = {
        "source": str(source.weights), "sha256": _sha256(source.weights), "pose_encoder_source": "skeleton_adapter" if adapter else str(pose_path),
        "base": _reference(base), "revision": config.revision, "unet": "full copy" if changed else "stage-2 weights only",
        "frozen_weights_differing_from_base": len(changed), "tensors": len(unet_state) + len(adapter), "warnings": warnings,
    }  # fmt: skip
    (tmp / "conversion.json").write_text(json.dumps(record, indent=1))
    _replace(tmp, output)
    return output


def _reference(base: str) -> str:
    from follow_your_pose.export import base_reference

    return base_reference(base)


def _replace(tmp: Path, output: Path) -> None:
    """Move the finished ``tmp`` folder to ``output`` (an old output is removed only once the new one is complete)."""
    old = output.with_name(f".{output.name}.old")
    if output.exists():
        shutil.rmtree(old, ignore_errors=True)
        output.replace(old)
    tmp.replace(output)
    shutil.rmtree(old, ignore_errors=True)
