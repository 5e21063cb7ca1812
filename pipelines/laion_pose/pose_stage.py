"""The pose stage: estimator, keep rule, annotation and skeleton image, as a callable class.

:class:`PoseAnnotator` loads its estimator once (``__init__``) and is then
called on batches, ``dict[str, np.ndarray]`` in and out, the shape Ray Data's
``map_batches`` and our actors both use. Rows whose status is
:data:`pipelines.laion_pose.download.DOWNLOADED` are decoded and run through
the estimator; every other row passes through unchanged. Nothing here imports
Ray.

Columns read: ``key``, ``status``, ``error``, ``image`` (encoded bytes),
``caption`` and, when present, ``url``, ``sha256``, ``original_width``,
``original_height`` (recorded in the annotation). Columns set: ``status``,
``error``, ``width``, ``height``, ``person_count``, ``visible_keypoints``,
``annotation`` (JSON text, kept rows only) and ``skeleton`` (PNG bytes, kept
rows only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from datasets.laion_pose import KEPT, make_annotation
from pipelines.laion_pose.config import PoseStageConfig
from pipelines.laion_pose.download import DOWNLOADED
from pose_extraction.backends import build_estimator
from pose_extraction.estimator import PoseEstimator, Poses
from pose_extraction.filtering import VisibilityFilter
from pose_extraction.skeleton import render_skeleton

ADDED_COLUMNS = ("width", "height", "person_count", "visible_keypoints", "annotation", "skeleton")


def objects(values: Sequence) -> np.ndarray:
    """A 1-D object array of ``values`` (bytes, strings, None) without numpy trying to nest them."""
    array = np.empty(len(values), dtype=object)
    array[:] = list(values)
    return array


def decode_rgb(data: bytes | None) -> np.ndarray | None:
    """RGB uint8 ``(H, W, 3)`` of an encoded image (grayscale expanded); None if it does not decode."""
    if not data:
        return None
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if array is None or array.size == 0:
        return None
    return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)


def encode_png(rgb: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return encoded.tobytes()


def _optional(batch: dict, name: str, index: int):
    column = batch.get(name)
    if column is None:
        return None
    value = column[index]
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else value


@dataclass
class Decoded:
    """A batch between the phases of :class:`PoseAnnotator`: its decoded images and the output being built."""

    batch: dict
    out: dict
    rows: list[int]
    """Batch rows that reach the estimator."""
    images: list[np.ndarray]
    """Their RGB images, same order."""


class PoseAnnotator:
    """Estimate poses on the downloaded rows of a batch, decide kept/rejected and render what is kept.

    Calling it runs three phases, also usable one by one so a caller can
    overlap them across batches (decode the next batch and finish the previous
    one while the model runs): :meth:`decode`, :meth:`estimate`, :meth:`finish`.
    """

    def __init__(self, config: PoseStageConfig, estimator: PoseEstimator | None = None) -> None:
        self.config = config
        self.estimator = estimator if estimator is not None else build_estimator(config.pose)
        self.keep = VisibilityFilter(config.visibility)

    @property
    def name(self) -> str:
        return self.estimator.name

    def close(self) -> None:
        """Free the estimator's model (when it can be freed)."""
        close = getattr(self.estimator, "close", None)
        if close is not None:
            close()

    def estimate(self, images: list[np.ndarray]) -> list[Poses | Exception]:
        """Poses per image in calls of ``images_per_call``; a failing call is retried image by image."""
        out: list[Poses | Exception] = []
        step = self.config.images_per_call
        for start in range(0, len(images), step):
            chunk = images[start : start + step]
            try:
                found = list(self.estimator(chunk))
                if len(found) != len(chunk):
                    raise RuntimeError(f"estimator returned {len(found)} results for {len(chunk)} images")
                out.extend(found)
            except Exception:
                out.extend(self._one_by_one(chunk))
        return out

    def _one_by_one(self, images: list[np.ndarray]) -> list[Poses | Exception]:
        results: list[Poses | Exception] = []
        for image in images:
            try:
                results.append(self.estimator([image])[0])
            except Exception as err:  # a failing image becomes a pose_failed row, not a failed shard
                results.append(err)
        return results

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        decoded = self.decode(batch)
        return self.finish(decoded, self.estimate(decoded.images))

    def decode(self, batch: dict[str, np.ndarray]) -> "Decoded":
        """First phase: decode the downloaded rows' images (rows that do not decode become ``not_an_image``)."""
        size = len(batch["key"])
        out = {name: objects(batch[name]) for name in ("status", "error")}
        out.update({name: objects([None] * size) for name in ADDED_COLUMNS})
        decoded = Decoded(batch, out, [], [])
        for index in range(size):
            if out["status"][index] != DOWNLOADED:
                continue
            image = decode_rgb(batch["image"][index])
            if image is None:
                out["status"][index], out["error"][index] = "not_an_image", "the stored image does not decode"
                continue
            decoded.rows.append(index)
            decoded.images.append(image)
        return decoded

    def finish(self, decoded: "Decoded", found: list[Poses | Exception]) -> dict[str, np.ndarray]:
        """Last phase: keep rule, annotation and skeleton image for each estimated row; the output batch."""
        batch, out = decoded.batch, decoded.out
        for index, image, poses in zip(decoded.rows, decoded.images, found):
            height, width = image.shape[:2]
            out["width"][index], out["height"][index] = width, height
            if isinstance(poses, Exception):
                out["status"][index], out["error"][index] = "pose_failed", f"{type(poses).__name__}: {poses}"
                continue
            verdict = self.keep(poses)
            out["status"][index] = verdict.status
            out["person_count"][index] = len(poses)
            out["visible_keypoints"][index] = verdict.max_visible
            if verdict.status == KEPT:
                out["annotation"][index] = self._annotation(batch, index, poses, width, height)
                out["skeleton"][index] = encode_png(
                    render_skeleton(poses.keypoints, height, width, style=self.config.skeleton)
                )
        return {**batch, **out}

    def _annotation(self, batch: dict, index: int, poses: Poses, width: int, height: int) -> str:
        source = {name: _optional(batch, name, index) for name in ("url", "sha256", "original_width", "original_height")}
        annotation = make_annotation(
            key=str(batch["key"][index]),
            width=width,
            height=height,
            keypoints=poses.keypoints,
            boxes=poses.boxes,
            box_scores=poses.box_scores,
            estimator=self.name,
            keypoint_threshold=self.config.visibility.keypoint_threshold,
            caption=_optional(batch, "caption", index) or "",
            extra={"source": {k: (int(v) if isinstance(v, (np.integer,)) else v) for k, v in source.items()}},
        )
        return json.dumps(annotation, ensure_ascii=False)
