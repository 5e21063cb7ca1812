"""The driving-video pose tool: sampling, geometry, tracking, smoothing, file layout, and MediaPipe on a moving photo."""

from __future__ import annotations

import json

import numpy as np
import pytest

import av

from datasets.clips import square_geometry  # noqa: E402
from pose_extraction.backends import PoseConfig  # noqa: E402
from pose_extraction.estimator import Poses  # noqa: E402
from pose_extraction.skeleton import GREEN, ORANGE, SkeletonStyle  # noqa: E402
from datasets.pose_sequence import PoseSequence, read_pose_sequence, write_keypoints  # noqa: E402
from pose_extraction.video import (  # noqa: E402
    KeypointSmoother,
    PersonTracker,
    PoseVideoConfig,
    extract_pose_sequence,
    main,
)
from tests.test_hdvila_cutting import decode_frames, draw_counter, read_counter  # noqa: E402


def _write_video(path, frames, fps=10):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "12"})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


class RedDotEstimator:
    """A real (if simple) estimator: one person whose 17 keypoints sit on the red dot of the frame; remembers counters."""

    name = "test/red-dot"

    def __init__(self) -> None:
        self.counters: list[int] = []

    def __call__(self, images):
        out = []
        for image in images:
            self.counters.append(read_counter(image))
            red = (image[..., 0] > 200) & (image[..., 1] < 60) & (image[..., 2] < 60)
            ys, xs = np.nonzero(red)
            if len(xs) == 0:
                out.append(Poses.empty())
                continue
            keypoints = np.zeros((1, 17, 3), np.float32)
            keypoints[0, :] = (xs.mean() + 0.5, ys.mean() + 0.5, 0.9)
            box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            out.append(Poses(keypoints, np.array([box], np.float32), np.array([0.9], np.float32)))
        return out


@pytest.fixture(scope="module")
def dot_video(tmp_path_factory):
    """40 frames at 10 fps, 320x180, frame counter in the middle, a red dot moving right 6 px per frame from x=20."""
    frames = []
    for index in range(40):
        image = np.full((180, 320, 3), 70, np.uint8)
        draw_counter(image, index)
        x = 20 + 6 * index
        image[20:30, x : x + 10] = (255, 0, 0)
        frames.append(image)
    return _write_video(tmp_path_factory.mktemp("dot") / "dot.mp4", frames)


def test_sampling_geometry_and_files(tmp_path, dot_video):
    estimator = RedDotEstimator()
    config = PoseVideoConfig(fps=5, every=2, size=90, start=0.4, max_frames=6, formats="both")
    sequence = extract_pose_sequence(dot_video, tmp_path, config, estimator=estimator)
    # 5 fps from 0.4 s, every 2nd: source frames 4, 8, 12, ... (counters read by the estimator agree)
    assert sequence.source_frames == [4, 8, 12, 16, 20, 24] == estimator.counters
    assert sequence.times == pytest.approx([0.4, 0.8, 1.2, 1.6, 2.0, 2.4]) and sequence.fps == 2.5
    geometry = square_geometry(320, 180, 90)  # resize to 160x90, crop x from 35
    for frame, keypoints in zip(sequence.source_frames, sequence.keypoints):
        centre = geometry.map_points(np.array([[20 + 6 * frame + 5.0, 25.0]]))[0]
        assert keypoints.shape == (1, 17, 3) and np.abs(keypoints[0, 0, :2] - np.clip(centre, 0, 89)).max() < 0.6
        assert keypoints[0, 0, 2] == pytest.approx(0.9 if centre[0] >= 0 else 0.0)
    assert sequence.keypoints[0][0, 0, 2] == 0.0 and sequence.keypoints[0][0, 0, 0] == 0.0  # dot at x=49: left of the crop
    header = json.loads((tmp_path / "keypoints.json").read_text())
    assert (header["schema"], header["frames"], header["width"], header["height"]) == ("pose_sequence", 6, 90, 90)
    assert header["transform"] == {"scale_x": 0.5, "scale_y": 0.5, "offset_x": 35, "offset_y": 0} and header["estimator"] == "test/red-dot"
    (tmp_path / "keypoints.json").rename(tmp_path / "moved.json")
    from_parquet = read_pose_sequence(tmp_path)
    assert from_parquet.header == {k: v for k, v in header.items() if k not in ("times", "source_frames", "keypoints", "boxes", "box_scores", "track_ids")}
    assert all(np.allclose(a, b, atol=1e-3) for a, b in zip(from_parquet.keypoints, sequence.keypoints))
    skeleton = decode_frames(tmp_path / "pose.mp4")
    assert len(skeleton) == 6 and skeleton[0].shape == (90, 90, 3)
    assert skeleton[0].max() < 40  # nothing visible on the first frame
    x, y = np.round(sequence.keypoints[-1][0, 0, :2]).astype(int)
    assert skeleton[-1][y - 1 : y + 2, x - 1 : x + 2].max() > 100 and skeleton[-1][:, : x - 5].max() < 40  # the dot, only


def test_cli_contract_errors(tmp_path, dot_video):
    with pytest.raises(SystemExit):
        main([str(tmp_path / "missing.mp4"), "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        main([str(dot_video), "--out", str(tmp_path), "--size", "15"])
    with pytest.raises(ValueError, match="no frame"):
        extract_pose_sequence(dot_video, tmp_path / "late", PoseVideoConfig(start=10.0), estimator=RedDotEstimator())
    assert not (tmp_path / "late" / "pose.mp4").exists() and not list((tmp_path / "late").glob(".*"))


def test_tracker_follows_boxes_and_layout_allows_varying_people(tmp_path):
    tracker = PersonTracker(0.3)
    a, b = [0, 0, 10, 20], [50, 0, 60, 20]
    assert tracker(np.array([a, b], np.float32)) == [0, 1]
    assert tracker(np.array([[51, 1, 61, 21], [1, 0, 11, 20]], np.float32)) == [1, 0]  # order swapped: ids follow
    assert tracker(np.zeros((0, 4), np.float32)) == []
    assert tracker(np.array([a], np.float32)) == [2]  # after a gap, a new track
    rng = np.random.default_rng(0)
    keypoints = [rng.random((p, 17, 3)).astype(np.float32) for p in (0, 1, 3, 2)]
    sequence = PoseSequence(
        header={"schema": "pose_sequence", "schema_version": 1, "fps": 8.0},
        keypoints=keypoints,
        boxes=[rng.random((len(k), 4)).astype(np.float32) for k in keypoints],
        box_scores=[rng.random(len(k)).astype(np.float32) for k in keypoints],
        track_ids=[list(range(len(k))) for k in keypoints],
        times=[0.0, 0.125, 0.25, 0.375],
        source_frames=[0, 3, 6, 9],
    )
    for fmt in ("json", "parquet"):
        folder = tmp_path / fmt
        folder.mkdir()
        write_keypoints(folder, sequence, fmt)
        back = read_pose_sequence(folder)
        assert [k.shape for k in back.keypoints] == [(0, 17, 3), (1, 17, 3), (3, 17, 3), (2, 17, 3)]
        assert all(np.allclose(x, y, atol=1e-3) for x, y in zip(back.keypoints, keypoints)) and back.track_ids == sequence.track_ids
    with pytest.raises(FileNotFoundError):
        read_pose_sequence(tmp_path)


@pytest.mark.parametrize("method", ["ema", "one_euro"])
def test_smoothing_reduces_jitter_and_restarts_hidden_points(method):
    rng = np.random.default_rng(1)
    truth = np.stack([np.linspace(100, 160, 60), np.full(60, 80.0)], axis=1)
    observed = truth + rng.normal(0, 2.0, truth.shape)
    config = PoseVideoConfig(smoothing=method, style=SkeletonStyle(threshold=0.3))
    smoother = KeypointSmoother(config, fps=25)
    smoothed = []
    for t, point in enumerate(observed):
        keypoints = np.zeros((1, 17, 3), np.float32)
        keypoints[0, :, :2], keypoints[0, :, 2] = point, 0.9
        keypoints[0, 3, 2] = 0.1 if t == 30 else 0.9  # keypoint 3 hidden once
        out = smoother([7], keypoints)
        if t == 31:
            assert np.allclose(out[0, 3, :2], point)  # restarted from the raw observation
        smoothed.append(out[0, 0, :2])
    smoothed = np.array(smoothed)
    assert np.abs(smoothed - truth)[10:].mean() < 0.75 * np.abs(observed - truth)[10:].mean()
    assert np.abs(smoothed - truth)[10:, 0].mean() < 4.0  # follows the motion (bounded lag)
    assert np.array_equal(KeypointSmoother(PoseVideoConfig(), fps=25)([0], keypoints), keypoints)


@pytest.mark.slow
def test_mediapipe_on_a_panning_photo(tmp_path, people_photos):
    import mediapipe  # noqa: F401
    import cv2

    person = cv2.resize(people_photos["astronaut"], (300, 300), interpolation=cv2.INTER_AREA)
    frames = []
    for index in range(13):
        image = np.full((360, 480, 3), 90, np.uint8)
        image[40:340, 20 + 8 * index : 320 + 8 * index] = person
        frames.append(image)
    video = _write_video(tmp_path / "pan.mp4", frames)
    assert main([str(video), "--out", str(tmp_path / "out"), "--pose-backend", "mediapipe", "--size", "256", "--formats", "json"]) == 0
    sequence = read_pose_sequence(tmp_path / "out")
    assert sequence.header["estimator"].startswith("mediapipe/") and len(sequence.keypoints) == 13
    found = [i for i, k in enumerate(sequence.keypoints) if len(k) and (k[0, :, 2] > 0.3).sum() >= 8]
    assert len(found) >= 11
    assert {ids[0] for i, ids in enumerate(sequence.track_ids) if i in found} == {0}  # one track all along
    scale = 256 / 360
    shoulders = np.array([sequence.keypoints[i][0, 5:7, :2].mean(axis=0) for i in found])
    slope_x = np.polyfit(found, shoulders[:, 0], 1)[0]
    assert slope_x == pytest.approx(8 * scale, rel=0.2)  # the keypoints move with the photo
    assert shoulders[:, 1].std() < 3.0
    skeleton = decode_frames(tmp_path / "out" / "pose.mp4")
    assert len(skeleton) == 13 and skeleton[0].shape == (256, 256, 3)
    torso = np.abs(skeleton[found[0]].astype(int) - ORANGE).sum(axis=2) < 60
    left = np.abs(skeleton[found[0]].astype(int) - GREEN).sum(axis=2) < 60
    assert torso.sum() > 50 and left.sum() > 20  # drawn with the release's palette
    from pose_extraction.video_cli import parse_command  # the saved config.json is a valid --config file

    saved = parse_command(["--config", str(tmp_path / "out" / "config.json")])
    assert (saved.video, saved.size, saved.formats, saved.pose.backend) == (str(video), 256, "json", "mediapipe")
    assert PoseConfig().backend == "mediapipe"
