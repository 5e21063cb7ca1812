"""Skeleton frames in any common form, brought to the generation size as the pose encoder's input.

Two preprocessings, chosen by name (``pose_preprocessing`` of the pipeline, ``--pose-preprocessing`` of
``training.generate``):

- ``default`` (ours): frames held as uint8 are resized to cover the output and centre-cropped with the
  same cv2 geometry the clip builder and the training data use (:class:`datasets.clips.CropGeometry`:
  area interpolation when shrinking, linear when enlarging); float frames are resized in float (bilinear,
  antialiased) so they are never re-quantised. Any output aspect ratio.
- ``release``: what the released inference does to its skeleton video, exactly: frames as floats 0-255,
  torchvision-style ``Resize(S)`` (shorter side to ``S``, longer side ``int(S * long / short)``, bilinear,
  ``align_corners=False``, no antialiasing), a centre crop ``S x S`` whose offset is
  ``int(round((h - S) / 2))`` (Python rounds half to even), then ``/ 255``. Square outputs only, as in the
  release. Use it to reproduce the release's videos; the default is what our own models were trained with.

Keypoint inputs are placed in the output frame first by :func:`fit_keypoints` (``pose_fit`` of ``training.generate``).

Either way the result is a float tensor ``(T, 3, H, W)`` in [0, 1]; nothing re-quantises it before the pose
encoder (the uint8 skeleton video written beside a generated video is a copy for people and metrics).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

PREPROCESSINGS = ("default", "release")
FITS = ("contain", "cover", "none")


def _stack(pose) -> np.ndarray:
    """A ``(T, H, W, 3)`` array of an array or a list of frames (PIL images or arrays)."""
    if isinstance(pose, np.ndarray):
        array = pose
    else:
        array = np.stack([np.asarray(frame.convert("RGB") if isinstance(frame, Image.Image) else frame) for frame in pose])
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"pose frames must be (T, H, W, 3) RGB, got shape {array.shape}")
    return array


def as_float_frames(pose) -> torch.Tensor:
    """Skeleton frames to a ``(T, 3, H, W)`` float tensor in [0, 1] on the CPU (uint8 inputs are divided by 255).

    ``pose``: a ``(T, H, W, 3)`` array (uint8, or floats in [0, 1]), a list of PIL images, a ``(T, 3, H, W)``
    tensor, or a ``(1, 3, T, H, W)`` clip tensor.
    """
    if torch.is_tensor(pose):
        tensor = pose.detach().cpu()
        if tensor.ndim == 5:
            if tensor.shape[0] != 1:
                raise ValueError(f"a pose clip tensor must hold one clip (1, 3, T, H, W), got {tuple(tensor.shape)}")
            tensor = tensor[0].permute(1, 0, 2, 3)
        if tensor.ndim != 4 or tensor.shape[1] != 3:
            raise ValueError(f"pose tensors must be (T, 3, H, W) or (1, 3, T, H, W), got {tuple(tensor.shape)}")
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(_stack(pose))).permute(0, 3, 1, 2)
    return tensor.float().div(255) if tensor.dtype == torch.uint8 else tensor.float()


def uint8_frames(pose) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 frames of ``pose``; float frames are rounded (for writing videos, never for the model)."""
    if not torch.is_tensor(pose):
        array = _stack(pose)
        if array.dtype == np.uint8:
            return array
    return to_uint8(as_float_frames(pose))


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """``(T, 3, H, W)`` floats in [0, 1] to ``(T, H, W, 3)`` uint8."""
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def prepare_frames(pose, height: int, width: int, preprocessing: str = "default") -> torch.Tensor:
    """``(T, 3, height, width)`` floats in [0, 1] for the pose encoder (see the module docstring)."""
    if preprocessing not in PREPROCESSINGS:
        raise ValueError(f"pose preprocessing must be one of {', '.join(PREPROCESSINGS)}, got {preprocessing!r}")
    if preprocessing == "release":  # uint8 frames become floats 0-255 directly, as the release reads them
        levels = torch.from_numpy(uint8_frames(pose)).float().permute(0, 3, 1, 2) if _is_uint8(pose) else as_float_frames(pose) * 255
        return release_resize_crop(levels, height, width)
    frames = as_float_frames(pose)
    if frames.shape[-2:] == (height, width):
        return frames
    if _is_uint8(pose):  # our training data's geometry and interpolation (cv2 on uint8)
        from datasets.clips import CropGeometry

        array = uint8_frames(pose)
        geometry = CropGeometry(array.shape[2], array.shape[1], width, height)
        return torch.from_numpy(np.stack([geometry.apply(frame) for frame in array])).permute(0, 3, 1, 2).float().div(255)
    return cover_resize_crop(frames, height, width)


def _is_uint8(pose) -> bool:
    if torch.is_tensor(pose) or isinstance(pose, np.ndarray):
        return pose.dtype in (torch.uint8, np.uint8)
    return _stack(pose).dtype == np.uint8


def release_resize_crop(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The release's skeleton preprocessing on ``(T, 3, h, w)`` floats in 0-255 (see the module docstring)."""
    if height != width:
        raise ValueError(f"the release's pose preprocessing makes square videos only, got {width}x{height}")
    size = height
    h, w = frames.shape[-2:]
    short, long = min(h, w), max(h, w)
    scaled = int(size * long / short)
    new_h, new_w = (size, scaled) if h <= w else (scaled, size)
    # (3, T, h, w), the release's layout: torch's CPU bilinear kernel rounds differently for other layouts at some
    # thread counts (one float ulp), and this tensor must be the release's bit for bit
    planes = frames.transpose(0, 1)
    resized = F.interpolate(planes, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=False)
    top, left = int(round((new_h - size) / 2)), int(round((new_w - size) / 2))
    return (resized[..., top : top + size, left : left + size] / 255).transpose(0, 1)


def cover_resize_crop(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(T, 3, h, w)`` floats resized (bilinear, antialiased) to cover ``height x width``, then centre-cropped."""
    h, w = frames.shape[-2:]
    if (h, w) == (height, width):
        return frames
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    resized = F.interpolate(frames, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return resized[..., top : top + height, left : left + width]


def fit_keypoints(keypoints_per_frame, source_size: tuple[int, int], height: int, width: int, fit: str = "contain",
                  margin: float = 0.05, threshold: float = 0.3) -> list[np.ndarray]:
    """COCO-17 keypoints of ``source_size = (width, height)`` frames placed in a ``height x width`` output frame.

    ``none``: through the source frame's resize-to-cover and centre crop (:class:`datasets.clips.CropGeometry`, what
    :func:`follow_your_pose.pipeline.render_keypoints` does); points the crop cuts off stay outside. ``contain``: one
    scale and shift for the whole sequence, taking the box of every visible keypoint (score above ``threshold``) of
    every frame to the largest box of its aspect that fits the frame less ``margin`` of each side, centred: every
    visible keypoint lands in the frame and the motion (steps, jumps, travel) is kept. ``cover``: the same box scaled
    to cover that area instead (the person as large as possible; points falling outside get score 0). A sequence with
    no visible keypoint is mapped as ``none``. Scores are kept (bar ``cover``'s cut points).
    """
    from datasets.clips import CropGeometry
    from datasets.keypoints import as_keypoints
    from pose_extraction.estimator import confine_to_image
    from pose_extraction.skeleton import scale_keypoints

    if fit not in FITS:
        raise ValueError(f"pose fit must be one of {', '.join(FITS)}, got {fit!r}")
    people = [as_keypoints(k) for k in keypoints_per_frame]
    visible = np.concatenate([k[k[..., 2] > threshold][:, :2] for k in people] or [np.zeros((0, 2), np.float32)])
    if fit == "none" or not len(visible):
        geometry = CropGeometry(int(source_size[0]), int(source_size[1]), width, height)
        return [scale_keypoints(k, geometry.scale, geometry.scale, *geometry.offset) for k in people]
    low, high = visible.min(axis=0).astype(np.float64), visible.max(axis=0).astype(np.float64)
    extent = np.maximum(high - low, 1.0)
    room = np.array([width - 1, height - 1], np.float64) * (1 - 2 * margin)
    scale = (min if fit == "contain" else max)(room[0] / extent[0], room[1] / extent[1])
    offset = (low + high) / 2 * scale - np.array([width - 1, height - 1]) / 2
    placed = [scale_keypoints(k, scale, scale, offset[0], offset[1]) for k in people]
    return [confine_to_image(k, height, width) for k in placed] if fit == "cover" else placed
