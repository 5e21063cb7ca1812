"""``pose_ap``: how well the generated people follow the input pose (the paper's "pose accuracy").

Ground truth is the input pose sequence of the record: per frame, every person
with at least one keypoint scored above ``pose_gt_threshold`` (the keypoints the
skeleton renderer drew), its box the tight box around those keypoints and its
area that box's area times ``pose_area_scale``. The pose estimator of
:mod:`pose_extraction` runs on each generated frame; each person it finds is a
detection scored ``box score x mean keypoint score``. Frames of all videos are
pooled into one COCO keypoint evaluation (pycocotools ``COCOeval`` with
``iouType='keypoints'`` and the COCO-17 sigmas): AP@[.5:.95], AP50 and AP75, x100.

The pooled figures are pycocotools' own ``evaluate``, ``accumulate`` and
``summarize``. Bootstrap intervals resample videos: ``evaluate`` (the OKS
matching) runs once over every frame, and each resample's AP is pooled from the
match records of its videos by :func:`_resample_figures`, the arithmetic of
``accumulate`` and ``summarize`` for this one category, area range and ``maxDets``
done on whole arrays. pycocotools' Python loops, run once per resample, cost
about 0.6 ms each, as much as the pose model on 16 frames for 1000 resamples;
``tests/test_evaluation_pooling.py`` checks that the intervals equal a full
pycocotools evaluation of every resample, exactly.
"""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from datasets.keypoints import COCO17_NAMES, boxes_from_keypoints
from evaluation.metrics.base import Metric
from evaluation.metrics.registry import register
from evaluation.sample import SampleError, VideoSample
from pose_extraction.skeleton import COCO17_LINKS

FIGURES = ("pose_ap", "pose_ap50", "pose_ap75")
_CATEGORY = {
    "id": 1,
    "name": "person",
    "supercategory": "person",
    "keypoints": list(COCO17_NAMES),
    "skeleton": [[a + 1, b + 1] for a, b, _ in COCO17_LINKS],
}


@register
class PoseAP(Metric):
    name = "pose_ap"
    figures = FIGURES
    description = "COCO keypoint OKS AP of poses re-detected on generated frames against the input poses (x100)."

    def __init__(self, context) -> None:
        super().__init__(context)
        self._file_prints: dict[str, str] | None = None

    def settings(self) -> dict:
        return {
            **self.config.pose.settings(),  # the backend and every one of its options
            "gt_threshold": self.config.pose_gt_threshold,
            "area_scale": self.config.pose_area_scale,
        }

    def cache_inputs(self) -> dict:
        """The content of every local file the backend options name (checkpoints, config files), hashed once a run."""
        if self._file_prints is None:
            self._file_prints = self.config.pose.file_fingerprints()
        return {"pose_files": self._file_prints}

    def prepare(self) -> None:
        self.context.estimator

    def update(self, sample: VideoSample) -> dict:
        keypoints = sample.keypoints
        if keypoints is None:
            raise SampleError("record has no input keypoints (pose given as images only), so pose AP has no ground truth")
        estimator = self.context.estimator
        detections = []
        step = self.config.pose_frames_per_call
        for start in range(0, len(sample.frames), step):
            with self.context.timed("forward/pose"):
                detections.extend(estimator(list(sample.frames[start : start + step])))
        state = {
            "gt": [ground_truth(k, self.config.pose_gt_threshold, self.config.pose_area_scale) for k in keypoints],
            "dt": [[detection(p.keypoints[i], float(p.box_scores[i])) for i in range(len(p))] for p in detections],
        }
        state["values"] = pose_ap_figures([state])
        return state

    def compute(self, states: Sequence[dict]) -> dict[str, float | None]:
        return pose_ap_figures(states)

    def bootstrap(self, states: Sequence[dict], resamples: np.ndarray) -> dict[str, np.ndarray]:
        evaluation, frames_of = _evaluate(states)
        out = {figure: np.full(len(resamples), np.nan) for figure in FIGURES}
        if evaluation is None:
            return out
        matches = [_VideoMatches.of(entry) for entry in _video_entries(evaluation, frames_of)]
        for row, videos in enumerate(resamples):
            for figure, value in _resample_figures(evaluation._paramsEval, [matches[v] for v in videos]).items():
                out[figure][row] = np.nan if value is None else value
        return out


def ground_truth(keypoints: np.ndarray, threshold: float, area_scale: float) -> list[dict]:
    """COCO annotations (without ids) for the people of one frame that have a visible keypoint."""
    people = []
    boxes = boxes_from_keypoints(keypoints, threshold=threshold)
    for person, (x1, y1, x2, y2) in zip(keypoints, boxes):
        visible = person[:, 2] > threshold
        if not visible.any():
            continue
        flat = np.zeros((len(person), 3), dtype=np.float64)
        flat[visible, :2] = person[visible, :2]
        flat[visible, 2] = 2
        w, h = float(x2 - x1), float(y2 - y1)
        people.append({
            "keypoints": np.round(flat, 3).reshape(-1).tolist(),
            "num_keypoints": int(visible.sum()),
            "bbox": [round(float(x1), 3), round(float(y1), 3), round(w, 3), round(h, 3)],
            "area": round(w * h * area_scale, 3),
        })
    return people


def detection(keypoints: np.ndarray, box_score: float) -> dict:
    """A COCO keypoint result (without image id) for one detected person."""
    score = box_score * float(np.mean(keypoints[:, 2]))
    return {"keypoints": np.round(keypoints.astype(np.float64), 3).reshape(-1).tolist(), "score": round(score, 6)}


def pose_ap_figures(states: Sequence[dict]) -> dict[str, float | None]:
    """AP, AP50, AP75 (x100) over all frames of ``states``; None where there is no visible ground truth."""
    evaluation, frames_of = _evaluate(states)
    if evaluation is None:
        return {figure: None for figure in FIGURES}
    return _accumulated(evaluation, _frame_entries(evaluation))


def _evaluate(states: Sequence[dict]):
    """Run ``COCOeval.evaluate`` once over every frame; returns it and each video's frame positions."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results, frames_of = [], [], [], []
    for state in states:
        if len(state["gt"]) != len(state["dt"]):
            raise ValueError(f"pose state has {len(state['gt'])} ground-truth frames but {len(state['dt'])} detected")
        first = len(images)
        for people, found in zip(state["gt"], state["dt"]):
            image_id = len(images) + 1
            images.append({"id": image_id})
            for person in people:
                annotations.append({**person, "id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0})
            results.extend({**d, "image_id": image_id, "category_id": 1} for d in found)
        frames_of.append(np.arange(first, len(images)))
    if not annotations:
        return None, frames_of
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = {"images": images, "annotations": annotations, "categories": [_CATEGORY]}
        truth.createIndex()
        found = truth.loadRes(results) if results else _empty_results(truth)
        evaluation = COCOeval(truth, found, iouType="keypoints")
        evaluation.params.imgIds = [image["id"] for image in images]
        evaluation.evaluate()
    return evaluation, frames_of


def _empty_results(truth):
    """What ``COCO.loadRes`` would return for no detections (it cannot take an empty list)."""
    from pycocotools.coco import COCO

    found = COCO()
    found.dataset = {"images": list(truth.dataset["images"]), "annotations": [], "categories": [_CATEGORY]}
    found.createIndex()
    return found


def _frame_entries(evaluation) -> list:
    """``evaluate``'s per-image match records for the ``all`` area range (AP, AP50, AP75 use no other)."""
    evaluated = evaluation._paramsEval
    count, everything = len(evaluated.imgIds), evaluated.areaRngLbl.index("all")
    return evaluation.evalImgs[everything * count : (everything + 1) * count]


def _video_entries(evaluation, frames_of) -> list:
    """One match record per video: its frames' records concatenated in frame order.

    ``evaluate`` already kept each frame's best ``maxDets`` detections, so pooling merged records with no
    further cut gives exactly the per-frame result.
    """
    frames = _frame_entries(evaluation)
    merged = []
    for positions in frames_of:
        parts = [frames[i] for i in positions if frames[i] is not None]
        if not parts:
            merged.append(None)
            continue
        merged.append({
            "dtScores": np.concatenate([np.asarray(e["dtScores"], dtype=np.float64) for e in parts]),
            "dtMatches": np.concatenate([e["dtMatches"] for e in parts], axis=1),
            "dtIgnore": np.concatenate([e["dtIgnore"] for e in parts], axis=1),
            "gtIgnore": np.concatenate([e["gtIgnore"] for e in parts]),
        })
    return merged


def _accumulated(evaluation, entries: list) -> dict[str, float | None]:
    """pycocotools ``accumulate`` + ``summarize`` over the per-frame match records ``entries``."""
    evaluated = evaluation._paramsEval
    subset = copy.copy(evaluation)
    subset.evalImgs = list(entries)
    params = copy.copy(evaluated)
    params.areaRng, params.areaRngLbl = [evaluated.areaRng[evaluated.areaRngLbl.index("all")]], ["all"]
    params.imgIds = list(range(len(entries)))
    subset._paramsEval, subset.params = params, params
    with contextlib.redirect_stdout(io.StringIO()):
        subset.accumulate()
        subset.summarize()  # medium/large figures come out -1: only the ``all`` range was accumulated
    stats = subset.stats
    return {figure: (None if stats[i] < 0 else float(100.0 * stats[i])) for i, figure in enumerate(FIGURES)}


@dataclass(frozen=True)
class _VideoMatches:
    """One video's match record as ``accumulate`` reads it: detection scores, then per OKS threshold which
    detections are true positives (rows ``0..T-1``) and false positives (rows ``T..2T-1``; an ignored detection is
    neither), and the number of ground-truth people not ignored."""

    scores: np.ndarray
    outcomes: np.ndarray
    people: int

    @classmethod
    def of(cls, entry: dict | None) -> "_VideoMatches | None":
        if entry is None:
            return None
        matched, ignored = entry["dtMatches"], entry["dtIgnore"]
        true = np.logical_and(matched, np.logical_not(ignored))
        false = np.logical_and(np.logical_not(matched), np.logical_not(ignored))
        return cls(entry["dtScores"], np.concatenate([true, false]), int(np.count_nonzero(entry["gtIgnore"] == 0)))


def _resample_figures(params, videos: list) -> dict[str, float | None]:
    """AP, AP50, AP75 (x100) of the videos ``videos`` (repeats allowed) pooled, as pycocotools' ``accumulate``
    and ``summarize`` compute them from the same records: detections ranked by score (a stable sort, so ties
    keep video order), precision made non-increasing from the right, read at the 101 recall thresholds (0
    past the last recall reached), averaged over the OKS thresholds the figure covers."""
    videos = [v for v in videos if v is not None]
    people = sum(v.people for v in videos)
    if people == 0:
        return {figure: None for figure in FIGURES}
    order = np.argsort(-np.concatenate([v.scores for v in videos]), kind="mergesort")
    ranked = np.concatenate([v.outcomes for v in videos], axis=1)[:, order]
    true, false = np.split(np.cumsum(ranked, axis=1).astype(float), 2)
    recall = true / people
    precision = np.maximum.accumulate((true / (false + true + np.spacing(1)))[:, ::-1], axis=1)[:, ::-1]
    precision = np.concatenate([precision, np.zeros((len(precision), 1))], axis=1)  # read as 0 past the end
    at = np.stack([np.searchsorted(reached, params.recThrs, side="left") for reached in recall])
    curve = np.take_along_axis(precision, at, axis=1)
    rows = {"pose_ap": slice(None), "pose_ap50": params.iouThrs == 0.5, "pose_ap75": params.iouThrs == 0.75}
    out = {}
    for figure, row in rows.items():
        values = curve[row].reshape(-1)
        out[figure] = float(100.0 * np.mean(values)) if len(values) else None
    return out
