"""training.generate --pose with what users hold: a video of a person, rainbow skeletons; fitting and frame rate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datasets import video_io
from datasets.generated import read_record, sidecar_paths
from datasets.pose_sequence import read_pose_sequence
from follow_your_pose.control_frames import fit_keypoints
from follow_your_pose.pose_sources import resample_indices
from pose_extraction.palette import classify_frames, measure_frames
from pose_extraction.skeleton import render_sequence
from tests.test_generation import WINDOW, export_dir, walking_keypoints  # noqa: F401  (export_dir: the tiny model fixture)
from tests.test_pose_palette import draw_rainbow


def portrait_dance(frames: int = 6) -> list[np.ndarray]:
    """A person filling a 1080 x 1920 portrait frame head to toe, stepping sideways 60 px a frame."""
    people = []
    for t, person in enumerate(walking_keypoints(frames, 128)):
        person = person.copy()
        person[..., 0] = (person[..., 0] - 64) * 14 + 300 + 60 * t
        person[..., 1] = person[..., 1] * 14.8 + 60
        person[0, 3, 2] = 0.1  # one hidden point (the left ear), anywhere
        person[0, 3, :2] = (5000, -3000)
        people.append(person)
    return people


def visible_points(keypoints) -> np.ndarray:
    return np.concatenate([k[k[..., 2] > 0.3][:, :2] for k in keypoints])


@pytest.mark.parametrize("size", [(64, 64), (96, 48), (48, 96)])
def test_contain_puts_every_visible_keypoint_in_the_frame_and_keeps_shape_and_motion(size):
    height, width = size
    source = portrait_dance()
    inside = lambda points: (points >= 0).all() and (points[:, 0] <= width - 1).all() and (points[:, 1] <= height - 1).all()  # noqa: E731
    assert not inside(visible_points(fit_keypoints(source, (1080, 1920), height, width, "none")))  # the square crop cuts the feet
    fitted = fit_keypoints(source, (1080, 1920), height, width, "contain", margin=0.05)
    points = visible_points(fitted)
    assert inside(points)
    low, high = points.min(axis=0), points.max(axis=0)
    assert min(low[0], width - 1 - high[0]) >= 0.05 * (width - 1) - 1e-3  # the margin, on each side
    assert min(low[1], height - 1 - high[1]) >= 0.05 * (height - 1) - 1e-3
    assert np.isclose(high[0] - low[0], 0.9 * (width - 1), atol=1e-3) or np.isclose(high[1] - low[1], 0.9 * (height - 1), atol=1e-3)
    scale = (fitted[1][0, 0, 0] - fitted[0][0, 0, 0]) / 60  # one scale, one shift for the sequence: the steps stay
    np.testing.assert_allclose(np.diff([f[0, 0, 0] for f in fitted]), 60 * scale, rtol=1e-4)
    np.testing.assert_allclose(fitted[2][0, :, 1] - fitted[2][0, 0, 1], (source[2][0, :, 1] - source[2][0, 0, 1]) * scale, atol=1e-2)
    render_sequence(fitted, height, width)  # drawable: hidden points far away are not drawn
    covered = fit_keypoints(source, (1080, 1920), height, width, "cover")
    assert inside(visible_points(covered)) and len(visible_points(covered)) <= len(points)


def test_none_is_the_pipelines_mapping_and_empty_sequences_pass():
    from follow_your_pose.pipeline import render_keypoints

    source = walking_keypoints(3, 128)
    _, mapped = render_keypoints(source, (128, 96), 64, 64)
    for a, b in zip(fit_keypoints(source, (128, 96), 64, 64, "none"), mapped):
        np.testing.assert_array_equal(a, b)
    empty = [np.zeros((0, 17, 3), np.float32)] * 2
    assert [len(k) for k in fit_keypoints(empty, (128, 128), 64, 64, "contain")] == [0, 0]
    with pytest.raises(ValueError, match="pose fit"):
        fit_keypoints(source, (128, 128), 64, 64, "stretch")


def test_resampling_takes_the_frame_on_screen():
    np.testing.assert_array_equal(resample_indices(30, 30.0, 8.0), [0, 3, 7, 11, 15, 18, 22, 26])  # 1 s of 30 fps at 8 fps
    np.testing.assert_array_equal(resample_indices(4, 8.0, 16.0), [0, 0, 1, 1, 2, 2, 3, 3])


def panning_astronaut(path, people_photos, frames: int = 8, fps: float = 8.0):
    """A real video of a person: the astronaut photo panned across a grey frame, H.264."""
    import cv2

    person = cv2.resize(people_photos["astronaut"], (300, 300), interpolation=cv2.INTER_AREA)
    images = []
    for index in range(frames):
        image = np.full((360, 480, 3), 90, np.uint8)
        image[40:340, 20 + 10 * index : 320 + 10 * index] = person
        images.append(image)
    return video_io.write_video(np.stack(images), path, fps, crf=18), np.stack(images)


def common(export_dir, out) -> list[str]:  # noqa: F811
    return ["--model", str(export_dir), "--prompt", "an astronaut dancing", "--steps", "1", "--window", str(WINDOW), "--out", str(out)]


@pytest.mark.slow
def test_a_video_of_a_person_becomes_poses_then_a_video(export_dir, tmp_path, people_photos):  # noqa: F811
    import mediapipe  # noqa: F401

    from training.generate import main

    video, images = panning_astronaut(tmp_path / "dance.mp4", people_photos)
    assert classify_frames(images) == "photo"
    out = tmp_path / "gen" / "dance.mp4"
    assert main([*common(export_dir, out), "--pose", str(video), "--pose-fps", "4", "--pose-options", '{"max_persons": 1}']) == 0
    poses = tmp_path / "gen" / "dance.poses"
    sequence = read_pose_sequence(poses)  # the extracted poses, at the source's size, reusable as --pose
    assert len(sequence.keypoints) == 4 and (sequence.header["width"], sequence.header["height"]) == (480, 360)
    assert sequence.fps == 4.0 and sequence.header["estimator"].startswith("mediapipe/")
    assert sum((k[..., 2] > 0.3).sum() >= 8 for k in sequence.keypoints) >= 3
    skeleton = video_io.read_video(poses / "pose.mp4")[0]
    assert skeleton.shape == (4, 360, 480, 3) and classify_frames(skeleton) == "ours"
    pose_video, _ = sidecar_paths(out)
    received = video_io.read_video(pose_video)[0]  # the pose frames the pipeline was given, as written
    figures = measure_frames(received)
    assert received.shape == (4, 64, 64, 3) and figures.kind == "ours" and figures.dark_share > 0.6, figures
    record = read_record(out)
    assert record["frames"] == 4 and record["fps"] == 4.0 and record["settings"]["pose_backend"] == "mediapipe"
    points = visible_points([np.asarray(k, np.float32).reshape(-1, 17, 3) for k in record["keypoints"]])
    assert len(points) >= 24 and points.min() >= 0 and points.max() <= 63  # contain: inside the frame
    again = tmp_path / "gen" / "again.mp4"  # the written poses drive a generation directly
    assert main([*common(export_dir, again), "--pose", str(poses)]) == 0 and read_record(again)["frames"] == 4


@pytest.mark.slow
def test_a_folder_of_photos_of_a_person(export_dir, tmp_path, people_photos):  # noqa: F811
    from PIL import Image

    from training.generate import main

    _, images = panning_astronaut(tmp_path / "unused.mp4", people_photos, frames=4)
    folder = tmp_path / "photos"
    folder.mkdir()
    for index, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{index:03d}.jpg")
    out = tmp_path / "photos.mp4"
    assert main([*common(export_dir, out), "--pose", str(folder), "--pose-stride", "2"]) == 0
    sequence = read_pose_sequence(tmp_path / "photos.poses")
    assert len(sequence.keypoints) == 2 and (tmp_path / "photos.poses" / "pose.mp4").is_file()
    assert read_record(out)["frames"] == 2 and classify_frames(video_io.read_video(sidecar_paths(out)[0])[0]) == "ours"
    assert main([*common(export_dir, out), "--pose", str(folder), "--pose-fps", "4"]) == 2  # no frame rate to resample


def test_rainbow_skeletons_are_refused_in_one_line_unless_forced(export_dir, tmp_path, capsys):  # noqa: F811
    from training.generate import main

    rainbow = np.stack([draw_rainbow(person[0], 128, 128) for person in walking_keypoints(4, 128)])
    video = video_io.write_video(rainbow, tmp_path / "openpose.mp4", 8, crf=16)
    out = tmp_path / "gen.mp4"
    capsys.readouterr()
    assert main([*common(export_dir, out), "--pose", str(video)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "Traceback" not in error
    assert "rainbow" in error and "--pose-force" in error and "keypoints" in error
    assert not out.exists()
    assert main([*common(export_dir, out), "--pose", str(video), "--pose-force", "true"]) == 0 and out.exists()


def test_pose_fps_resamples_skeleton_videos_and_bad_options_are_refused(export_dir, tmp_path):  # noqa: F811
    from training.generate import main

    ours = render_sequence(walking_keypoints(10, 64), 64, 64)
    video = video_io.write_video(ours, tmp_path / "ours.mp4", 10, crf=12)
    out = tmp_path / "gen.mp4"
    assert main([*common(export_dir, out), "--pose", str(video), "--pose-fps", "5"]) == 0
    record = read_record(out)
    assert record["frames"] == 5 and record["fps"] == 5.0 and record["keypoints"] is None
    assert main([*common(export_dir, out), "--pose", str(video), "--pose-fps", "5", "--pose-stride", "2"]) == 0
    assert read_record(out)["frames"] == 3 and read_record(out)["fps"] == 2.5
    for bad in (["--pose-backend", "openpose"], ["--pose-options", json.dumps({"colour": 1})], ["--pose-margin", "0.5"]):
        with pytest.raises(SystemExit):
            main([*common(export_dir, out), "--pose", str(video), *bad])
