"""MMPose top-down pose estimation (MMDet person boxes + HRNet) as a COCO-17 estimator.

The paper's recipe: detect people, crop each box, run HRNet on the crops.
Here both models are built from the configs that ship inside the installed
mmdet/mmpose packages (or from a config file path) and loaded once, in
``__init__``. A call works in batches:

1. Detection: images go through the detector's own test pipeline,
   ``config.batch_size`` images per ``test_step``. Person boxes above
   ``det_score_threshold`` are clipped to the image, merged by NMS
   (``nms_iou_threshold``) and capped at ``det_max_persons`` per image.
2. Pose: the boxes of *all* images of the call become crops through the pose
   model's own test pipeline (``GetBBoxCenterScale`` + ``TopdownAffine``), and
   go through the model ``config.batch_size`` crops per ``test_step``. MMPose
   maps the keypoints back to pixels of each crop's source image.
3. :func:`pose_extraction.estimator.confine_to_image` applies the rule shared
   with every backend: points off the image score 0, coordinates clipped.

:meth:`MMPoseEstimator.estimate_in_boxes` runs step 2 on boxes the caller
gives (no detector needed). Weights come from a local path or a URL in the
config; without them the estimator refuses to start unless
``allow_random_weights`` is set (plumbing tests and benchmarks only).
Checkpoints load with ``torch.load(weights_only=True)``; a checkpoint that
needs full unpickling loads only with ``trust_checkpoint=True``.
``pose_cfg_options`` / ``det_cfg_options`` are merged into the model configs
(e.g. ``{"model.test_cfg.flip_test": False}``).
"""

from __future__ import annotations

import importlib.util
import logging
import pickle
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pose_extraction.estimator import BackendConfig, Poses, check_rgb_image, confine_to_image, resolve_device
from pose_extraction.mmcv_ops import ensure_mmcv_ops

logger = logging.getLogger(__name__)

POSE_CONFIG_DIRS: tuple[tuple[str, str], ...] = (("mmpose", ".mim/configs"),)
"""Where config names are looked up: (package, folder inside it)."""
DET_CONFIG_DIRS: tuple[tuple[str, str], ...] = (("mmdet", ".mim/configs"), ("mmpose", ".mim/demo/mmdetection_cfg"))


@dataclass(frozen=True, kw_only=True)
class MMPoseConfig(BackendConfig):
    """MMDet person detector + MMPose top-down HRNet (the paper's choice), on torch."""

    device: str = "auto"
    """Torch device: ``auto`` picks ``cuda`` when there is one, else ``cpu``."""
    batch_size: int = 16
    """Person crops per forward pass of the pose model (and images per pass of the detector)."""
    pose_config: str = "td-hm_hrnet-w32_8xb64-210e_coco-256x192"
    """Pose model config: a name from mmpose's model zoo or a path to a config file."""
    pose_checkpoint: str | None = None
    """Pose model weights: local path or URL. None leaves random weights (tests only; the builder refuses it)."""
    det_config: str = "rtmdet_tiny_8xb32-300e_coco"
    """MMDet person detector config: a name from mmdet's model zoo or a path."""
    det_checkpoint: str | None = None
    """MMDet detector weights: local path or URL. None leaves random weights (tests only)."""
    det_score_threshold: float = 0.5
    """Person boxes scoring at or below this are dropped before pose estimation."""
    det_max_persons: int = 20
    """At most this many person boxes per image (highest scores first)."""
    nms_iou_threshold: float = 0.65
    """IoU above which overlapping person boxes are merged."""
    whole_image_when_no_detector: bool = False
    """Skip detection and treat the whole image as one person box."""
    allow_random_weights: bool = False
    """Allow running without checkpoints (random weights). For tests and benchmarks of the plumbing only."""
    trust_checkpoint: bool = False
    """Unpickle checkpoints fully (only for files you trust); otherwise torch's weights-only loader reads them."""
    pose_cfg_options: dict[str, Any] = field(default_factory=dict)
    """Overrides merged into the pose model config (``merge_from_dict``), e.g. ``{"model.test_cfg.flip_test": False}``."""
    det_cfg_options: dict[str, Any] = field(default_factory=dict)
    """Overrides merged into the detector config, e.g. ``{"model.test_cfg.nms_pre": 500}``."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if not 0.0 <= self.det_score_threshold < 1.0:
            raise ValueError("det_score_threshold must be in [0, 1)")
        if self.det_max_persons < 1:
            raise ValueError("max persons must be at least 1")
        if not 0.0 < self.nms_iou_threshold <= 1.0:
            raise ValueError("nms_iou_threshold must be in (0, 1]")
        for name in ("pose_cfg_options", "det_cfg_options"):
            options = getattr(self, name)
            if not isinstance(options, dict) or not all(isinstance(key, str) for key in options):
                raise ValueError(f"{name} must be a dict of config keys (str) to values, got {options!r}")

    def unset_weights(self) -> str | None:
        return "pose_checkpoint" if self.pose_checkpoint is None and not self.allow_random_weights else None


def find_config(name: str, search: Sequence[tuple[str, str]]) -> Path:
    """A config file path as given, or the config of that name (``stem`` or ``stem.py``) shipped in a package."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    stem = path.name[:-3] if path.name.endswith(".py") else path.name
    searched = []
    for package, folder in search:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        root = Path(spec.origin).parent / folder
        searched.append(str(root))
        matches = sorted(root.rglob(f"{stem}.py"))
        if matches:
            return matches[0]
    raise FileNotFoundError(f"no config file {name!r}, and no config named {stem!r} under {searched or 'the installed packages'}")


def _read_checkpoint(checkpoint: str, trusted: bool) -> dict:
    import torch

    try:
        if "://" in checkpoint:
            return torch.hub.load_state_dict_from_url(checkpoint, map_location="cpu", weights_only=not trusted)
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {checkpoint!r} does not exist")
        return torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"checkpoint {checkpoint!r} holds objects that torch's weights-only loader refuses ({error}). "
            f"If you trust the file, set trust_checkpoint=True to unpickle it fully."
        ) from error


def load_weights(model, checkpoint: str, *, trusted: bool = False) -> dict:
    """Load a checkpoint (local path or URL) into ``model``; returns the checkpoint's ``meta`` dict.

    Every parameter and buffer of the model must be in the checkpoint (a clear
    error lists the missing ones); keys the model does not have are logged.
    """
    loaded = _read_checkpoint(checkpoint, trusted)
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {checkpoint!r} holds no state dict")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing:
        raise ValueError(
            f"checkpoint {checkpoint!r} does not fit the model config: {len(missing)} weights missing, e.g. {missing[:5]}"
        )
    if unexpected:
        logger.warning("checkpoint %s has %d keys the model does not use, e.g. %s", checkpoint, len(unexpected), unexpected[:5])
    meta = loaded.get("meta", {}) if isinstance(loaded, dict) else {}
    return meta if isinstance(meta, dict) else {}


def _load_config(path: Path, options: dict | None):
    from mmengine.config import Config

    cfg = Config.fromfile(str(path))
    if options:
        cfg.merge_from_dict(options)
    if "init_cfg" in cfg.model.get("backbone", {}):
        cfg.model.backbone.init_cfg = None  # the shipped configs point at ImageNet weights on the web
    return cfg


def _as_numpy(value) -> np.ndarray:
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)


class MMPoseEstimator:
    """Person detection (MMDet) + top-down keypoints (MMPose) behind the :class:`PoseEstimator` interface."""

    def __init__(self, config: MMPoseConfig) -> None:
        uses_detector = not config.whole_image_when_no_detector
        missing = [f"pose_checkpoint (weights for {config.pose_config})"] if config.pose_checkpoint is None else []
        if uses_detector and config.det_checkpoint is None:
            missing.append(f"det_checkpoint (weights for {config.det_config})")
        if missing and not config.allow_random_weights:
            raise ValueError(
                f"MMPose needs trained weights, but no {' and no '.join(missing)} was given. Pass a local path or "
                f"URL of each checkpoint (e.g. the COCO HRNet-w32 256x192 and RTMDet person checkpoints of the "
                f"MMPose/MMDet model zoos), or set allow_random_weights=True for plumbing tests only."
            )
        for field in ("pose_checkpoint", "det_checkpoint") if uses_detector else ("pose_checkpoint",):
            value = getattr(config, field)
            if value is not None and "://" not in value and not Path(value).expanduser().is_file():
                raise FileNotFoundError(f"{field} {value!r} does not exist")
        if missing:
            logger.warning("MMPose estimator with RANDOM weights (allow_random_weights): no %s", ", no ".join(missing))
        ensure_mmcv_ops()
        self.config = config
        self.device = resolve_device(config.device)
        self.random_weights = bool(missing)
        self._lock = threading.Lock()
        self._closed = False
        pose_path = find_config(config.pose_config, POSE_CONFIG_DIRS)
        self._build_pose_model(pose_path)
        self.detector = None
        detector_name = "whole-image"
        if uses_detector:
            det_path = find_config(config.det_config, DET_CONFIG_DIRS)
            self._build_detector(det_path)
            detector_name = f"mmdet/{det_path.stem}"
        self.name = f"mmpose/{pose_path.stem}+{detector_name}"

    def _build_pose_model(self, path: Path) -> None:
        from mmengine.dataset import Compose
        from mmengine.registry import DefaultScope
        from mmpose.apis import init_model

        cfg = _load_config(path, self.config.pose_cfg_options)
        model = init_model(cfg, None, device="cpu")
        if self.config.pose_checkpoint is not None:
            meta = load_weights(model, self.config.pose_checkpoint, trusted=self.config.trust_checkpoint)
            if "dataset_meta" in meta:
                model.dataset_meta = meta["dataset_meta"]
        if model.dataset_meta.get("num_keypoints") != 17:
            raise ValueError(f"{path.name} predicts {model.dataset_meta.get('num_keypoints')} keypoints; COCO-17 is needed")
        self.pose_model = model.to(self.device).eval()
        with DefaultScope.overwrite_default_scope(cfg.get("default_scope", "mmpose")):
            self.pose_pipeline = Compose(cfg.test_dataloader.dataset.pipeline)

    def _build_detector(self, path: Path) -> None:
        from mmdet.apis import init_detector
        from mmdet.utils import get_test_pipeline_cfg
        from mmengine.dataset import Compose
        from mmengine.registry import DefaultScope

        cfg = _load_config(path, self.config.det_cfg_options)
        detector = init_detector(cfg, None, device="cpu")
        if self.config.det_checkpoint is not None:
            meta = load_weights(detector, self.config.det_checkpoint, trusted=self.config.trust_checkpoint)
            if "dataset_meta" in meta:
                detector.dataset_meta = meta["dataset_meta"]
            elif "CLASSES" in meta:
                detector.dataset_meta = {"classes": meta["CLASSES"]}
        classes = [str(name).lower() for name in detector.dataset_meta.get("classes", ())]
        if "person" not in classes:
            raise ValueError(f"detector {path.name} has no 'person' class (classes: {classes[:10]}...)")
        self.person_label = classes.index("person")
        self.detector = detector.to(self.device).eval()
        pipeline = get_test_pipeline_cfg(cfg)
        pipeline[0].type = "mmdet.LoadImageFromNDArray"
        with DefaultScope.overwrite_default_scope(cfg.get("default_scope", "mmdet")):
            self.det_pipeline = Compose(pipeline)

    def __call__(self, images: Sequence[np.ndarray]) -> list[Poses]:
        """Detect people and estimate their poses on RGB uint8 ``(H, W, 3)`` images; one :class:`Poses` per image."""
        bgr = self._bgr_images(images)
        with self._lock:
            if self.detector is None:
                found = [(np.array([[0, 0, image.shape[1], image.shape[0]]], np.float32), np.ones(1, np.float32)) for image in bgr]
            else:
                found = self._detect(bgr)
            return self._estimate(bgr, [boxes for boxes, _ in found], [scores for _, scores in found])

    def estimate_in_boxes(
        self,
        images: Sequence[np.ndarray],
        boxes: Sequence[np.ndarray],
        box_scores: Sequence[np.ndarray] | None = None,
    ) -> list[Poses]:
        """Poses of the people in given ``x1, y1, x2, y2`` boxes ``(N_i, 4)`` per image (no detection).

        Boxes are clipped to their image; a box with no area left is an error.
        ``box_scores`` default to 1.
        """
        if len(boxes) != len(images) or (box_scores is not None and len(box_scores) != len(images)):
            raise ValueError(f"{len(images)} images need as many box arrays (and score arrays), got {len(boxes)}")
        bgr = self._bgr_images(images)
        clipped, scores = [], []
        for index, image in enumerate(bgr):
            height, width = image.shape[:2]
            given = np.asarray(boxes[index], np.float32).reshape(-1, 4)
            given = np.clip(given, 0, [width, height, width, height]).astype(np.float32)
            bad = ~np.isfinite(given).all(axis=1) | (given[:, 2] <= given[:, 0]) | (given[:, 3] <= given[:, 1])
            if bad.any():
                raise ValueError(f"image {index}: boxes {np.flatnonzero(bad).tolist()} have no area inside the image")
            clipped.append(given)
            score = np.ones(len(given), np.float32) if box_scores is None else np.asarray(box_scores[index], np.float32)
            if score.shape != (len(given),):
                raise ValueError(f"image {index}: {len(given)} boxes but box scores of shape {score.shape}")
            scores.append(score)
        with self._lock:
            return self._estimate(bgr, clipped, scores)

    def _bgr_images(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Checked RGB images flipped to the BGR order both OpenMMLab test pipelines expect."""
        if self._closed:
            raise RuntimeError("this MMPoseEstimator was closed")
        return [np.ascontiguousarray(check_rgb_image(image, index)[..., ::-1]) for index, image in enumerate(images)]

    def _detect(self, bgr: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        import torch
        from mmengine.dataset import pseudo_collate

        found = []
        for start in range(0, len(bgr), self.config.batch_size):
            chunk = bgr[start : start + self.config.batch_size]
            batch = pseudo_collate([self.det_pipeline(dict(img=image, img_id=start + i)) for i, image in enumerate(chunk)])
            with torch.no_grad():
                results = self.detector.test_step(batch)
            found.extend(self._person_boxes(result.pred_instances, image.shape[:2]) for result, image in zip(results, chunk))
        return found

    def _person_boxes(self, instances, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes of one image: above the score threshold, clipped, NMS-merged, best first, capped."""
        import torch
        import torchvision

        height, width = shape
        keep = (instances.labels == self.person_label) & (instances.scores > self.config.det_score_threshold)
        boxes = instances.bboxes[keep].float().cpu()
        scores = instances.scores[keep].float().cpu()
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        real = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
        boxes, scores = boxes[real], scores[real]
        order = torchvision.ops.nms(boxes, scores, self.config.nms_iou_threshold)[: self.config.det_max_persons]
        order = order if len(order) else torch.zeros(0, dtype=torch.long)
        return boxes[order].numpy().reshape(-1, 4), scores[order].numpy().reshape(-1)

    def _estimate(self, bgr: list[np.ndarray], boxes: list[np.ndarray], scores: list[np.ndarray]) -> list[Poses]:
        """Top-down keypoints for every box of every image, ``batch_size`` crops per forward pass."""
        import torch
        from mmengine.dataset import pseudo_collate

        jobs = [(index, box) for index, image_boxes in enumerate(boxes) for box in image_boxes]
        keypoints = np.zeros((len(jobs), 17, 3), np.float32)
        meta = self.pose_model.dataset_meta
        for start in range(0, len(jobs), self.config.batch_size):
            chunk = jobs[start : start + self.config.batch_size]
            data = [
                self.pose_pipeline(dict(img=bgr[index], bbox=box[None], bbox_score=np.ones(1, np.float32), **meta))
                for index, box in chunk
            ]
            with torch.no_grad():
                results = self.pose_model.test_step(pseudo_collate(data))
            for offset, sample in enumerate(results):
                keypoints[start + offset, :, :2] = _as_numpy(sample.pred_instances.keypoints)[0]
                keypoints[start + offset, :, 2] = _as_numpy(sample.pred_instances.keypoint_scores)[0]
        poses, first = [], 0
        for image, image_boxes, image_scores in zip(bgr, boxes, scores):
            people = keypoints[first : first + len(image_boxes)]
            first += len(image_boxes)
            height, width = image.shape[:2]
            poses.append(Poses(confine_to_image(people, height, width), image_boxes, image_scores) if len(people) else Poses.empty())
        return poses

    def close(self) -> None:
        """Drop both models (and the GPU memory they hold)."""
        on_cuda = str(getattr(self, "device", "")).startswith("cuda")
        self._closed = True
        self.pose_model = None
        self.detector = None
        if on_cuda:
            import torch

            torch.cuda.empty_cache()

    def __enter__(self) -> "MMPoseEstimator":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
