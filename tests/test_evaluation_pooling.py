"""The evaluator's fast paths give exactly the numbers of the straightforward ones: the pose AP bootstrap
against a full pycocotools evaluation of every resample, the one-context frame conversion against PyAV's
per-frame ``to_ndarray``. Real photos, real mp4 files, the real MediaPipe pose estimator."""

from __future__ import annotations

import json

import numpy as np

from datasets import video_io as datasets_video_io
from evaluation import video_io
from evaluation.config import EvalConfig
from evaluation.evaluator import confidence_intervals
from evaluation.metrics import MetricContext
from evaluation.metrics.pose_ap import PoseAP, pose_ap_figures
from evaluation.run import main
from tests.test_metrics import write_generated_video


class FullEvaluationPerResample(PoseAP):
    """pose_ap with the straightforward bootstrap: every resample's videos through the whole of pycocotools."""

    def bootstrap(self, states, resamples):
        out = {figure: np.full(len(resamples), np.nan) for figure in self.figures}
        for row, videos in enumerate(resamples):
            for figure, value in pose_ap_figures([states[v] for v in videos]).items():
                out[figure][row] = np.nan if value is None else value
        return out


def drifting(photo: np.ndarray, frames: int, step: int) -> np.ndarray:
    from PIL import Image

    still = np.asarray(Image.fromarray(photo).resize((256, 256)))
    return np.stack([np.roll(still, step * t, axis=1) for t in range(frames)])


def write_known_pose_videos(folder, people_photos) -> None:
    """Videos of real photos whose record keypoints are what MediaPipe finds on them, moved by a few pixels per
    video (so OKS, and AP, differ between videos); one video also claims a second person nobody draws."""
    from pose_extraction.backends import PoseConfig, build_estimator

    clips = {f"{name}{step}": drifting(photo, 4, step) for name, photo in people_photos.items() for step in (1, 3)}
    estimator = build_estimator(PoseConfig(backend="mediapipe"))
    try:
        found = {key: [p.keypoints for p in estimator(list(frames))] for key, frames in clips.items()}
    finally:
        estimator.close()
    for index, (key, frames) in enumerate(clips.items()):
        truth = [k.copy() for k in found[key]]
        for t, people in enumerate(truth):
            people[:, :, 0] += 1.5 * index + 0.5 * t  # the known pose, a few pixels off what the model sees
        if index == 1:
            truth[0] = np.concatenate([truth[0], truth[0] + np.array([40.0, 0.0, 0.0], np.float32)])
        write_generated_video(folder, key, frames, truth, f"a person, take {index}")


def test_pose_ap_bootstrap_interval_equals_a_full_coco_evaluation_of_every_resample(tmp_path, people_photos):
    write_known_pose_videos(tmp_path / "videos", people_photos)
    out = tmp_path / "out"
    assert main(["--videos", str(tmp_path / "videos"), "--out", str(out), "--metrics", "pose_ap",
                 "--pose-backend", "mediapipe", "--bootstrap", "300", "--no-report", "--quiet"]) == 0  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    keys = [video["key"] for video in results["videos"]]
    states = [json.loads((out / "states" / "pose_ap" / f"{key}.json").read_text())["state"] for key in keys]
    config = EvalConfig(metrics=("pose_ap",), bootstrap=300)
    with MetricContext(config) as context:
        straightforward = confidence_intervals(FullEvaluationPerResample(context), states, config)
        resamples = np.random.default_rng(1).integers(0, len(states), size=(200, len(states)))
        fast, full = PoseAP(context).bootstrap(states, resamples), FullEvaluationPerResample(context).bootstrap(states, resamples)
    assert results["metrics"]["pose_ap"]["ci"] == straightforward
    for figure in fast:
        np.testing.assert_array_equal(fast[figure], full[figure])  # every resample, not only the two percentiles
    assert len(set(full["pose_ap"])) > 10 and len({v["values"]["pose_ap"] for v in results["videos"]}) == len(keys)
    low, high = results["metrics"]["pose_ap"]["ci"]["pose_ap"]
    assert 0.0 < low < high < 100.0


def test_frames_convert_to_the_same_pixels_as_pyav_per_frame(tmp_path, people_photos):
    import av

    frames = drifting(people_photos["astronaut"], 6, 5)
    path = video_io.write_video(tmp_path / "astronaut.mp4", frames, fps=8)
    ours = video_io.read_video(path)
    with av.open(str(path)) as container:  # PyAV's own conversion: a new context for every frame
        per_frame = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    assert ours.dtype == np.uint8 and ours.shape == frames.shape
    np.testing.assert_array_equal(ours, per_frame)
    some = datasets_video_io.decode_frames(path.read_bytes(), np.array([1, 4]), decoder="pyav")
    np.testing.assert_array_equal(some, per_frame[[1, 4]])
    np.testing.assert_array_equal(np.stack(list(datasets_video_io.iter_frames(path))), per_frame)
