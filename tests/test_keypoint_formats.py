"""Keypoint files people already have (OpenPose BODY_25 / COCO-18, DWPose dicts, ComfyUI POSE_KEYPOINT) to COCO-17.

Each file is written here in its producer's documented layout, from point names (OpenPose's doc/02_output.md
orders; DWPose and ComfyUI use OpenPose-18), not from the module's index tables, so a wrong table fails.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from datasets.keypoint_formats import from_dwpose, read_keypoint_source
from datasets.keypoints import COCO17_NAMES
from tests.test_generation import WINDOW, export_dir, walking_keypoints  # noqa: F401 (export_dir: the tiny model fixture)

BODY_25 = (
    "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "MidHip", "RHip", "RKnee",
    "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar", "LBigToe", "LSmallToe", "LHeel", "RBigToe",
    "RSmallToe", "RHeel",
)  # fmt: skip
OPENPOSE_18 = (
    "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "RHip", "RKnee", "RAnkle",
    "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar",
)  # fmt: skip


def openpose_name(coco_name: str) -> str:
    """``left_shoulder`` -> ``LShoulder``, ``nose`` -> ``Nose``."""
    side, _, part = coco_name.partition("_")
    return {"left": "L", "right": "R"}[side] + part.capitalize() if part else side.capitalize()


def pose(shift: float = 0.0, persons: int = 1) -> np.ndarray:
    """A COCO-17 pose in pixels of a 200 x 100 frame, every point distinct, scores 0.5-0.95."""
    rng = np.random.default_rng(int(shift) + persons)
    xy = rng.uniform([10, 5], [190, 95], size=(persons, 17, 2)) + shift
    scores = np.broadcast_to(np.linspace(0.5, 0.95, 17), (persons, 17))
    return np.concatenate([xy, scores[..., None]], axis=-1).astype(np.float32)


def to_openpose(person: np.ndarray, names: tuple[str, ...]) -> list[float]:
    """A COCO-17 person as an OpenPose ``pose_keypoints_2d`` list: neck, mid-hip and feet made up, so they must be dropped."""
    values = np.full((len(names), 3), 7.0)  # points COCO-17 lacks get junk that must not leak through
    for coco, name in enumerate(COCO17_NAMES):
        values[names.index(openpose_name(name))] = person[coco]
    return values.reshape(-1).tolist()


def write_json(path, value) -> None:
    path.write_text(json.dumps(value))


@pytest.mark.parametrize("names", [BODY_25, OPENPOSE_18], ids=["BODY_25", "COCO-18"])
def test_openpose_folder_round_trips_to_coco17(tmp_path, names):
    frames = [pose(shift=t, persons=2) for t in range(3)]
    folder = tmp_path / "openpose"
    folder.mkdir()
    for t, keypoints in enumerate(frames):  # frame_2 must come before frame_10: names sort by number
        people = [{"person_id": [-1], "pose_keypoints_2d": to_openpose(p, names), "face_keypoints_2d": []} for p in keypoints]
        write_json(folder / f"clip_{[0, 2, 10][t]}_keypoints.json", {"version": 1.3, "people": people})
    read, size, fps = read_keypoint_source(folder)
    assert fps is None and len(read) == 3
    for got, want in zip(read, frames):
        assert got.dtype == np.float32 and got.shape == (2, 17, 3)
        np.testing.assert_allclose(got, want, atol=1e-4)
    # no canvas in OpenPose's files: the frame leaving equal margins around every point of every frame
    points = np.concatenate(frames)[..., :2].reshape(-1, 2)
    assert size == tuple(int(np.ceil(v)) for v in points.max(axis=0) + points.min(axis=0))


def test_openpose_missing_people_and_points_get_score_zero(tmp_path):
    person = to_openpose(pose()[0], BODY_25)
    person[3 * BODY_25.index("LWrist") : 3 * BODY_25.index("LWrist") + 3] = [0.0, 0.0, 0.0]  # OpenPose's "not found"
    folder = tmp_path / "op"
    folder.mkdir()
    write_json(folder / "0.json", {"people": [{"pose_keypoints_2d": person}, {"pose_keypoints_2d": []}]})
    write_json(folder / "1.json", {"people": []})
    (first, second), _, _ = read_keypoint_source(folder)
    left_wrist = COCO17_NAMES.index("left_wrist")
    assert first.shape == (2, 17, 3) and (first[0, left_wrist] == 0).all() and (first[1] == 0).all()
    assert (first[0, :, 2] > 0).sum() == 16
    assert second.shape == (0, 17, 3)


def test_openpose_of_another_length_is_refused(tmp_path):
    folder = tmp_path / "op"
    folder.mkdir()
    write_json(folder / "0.json", {"people": [{"pose_keypoints_2d": [1.0] * 45}]})
    with pytest.raises(ValueError, match="45 values: expected 75 .*BODY_25.* or 54 .*COCO-18"):
        read_keypoint_source(folder)


def to_dwpose(people: np.ndarray, width: int, height: int, missing=()) -> dict:
    """controlnet_aux's DWPose dict: candidate rows normalised to 0-1, subset rows of OpenPose-18 candidate indices or -1."""
    candidate, subset = [], []
    for person in people:
        row = [-1.0] * 18
        for coco, name in enumerate(COCO17_NAMES):
            if name not in missing:
                row[OPENPOSE_18.index(openpose_name(name))] = float(len(candidate))
                candidate.append([float(person[coco, 0]) / width, float(person[coco, 1]) / height])
        candidate.append([0.5, 0.5])  # the neck: listed, then dropped
        row[OPENPOSE_18.index("Neck")] = float(len(candidate) - 1)
        subset.append(row)
    hands = np.full((2 * len(people), 21, 2), -1.0).tolist()
    return {"bodies": {"candidate": candidate, "subset": subset}, "hands": hands, "faces": np.zeros((len(people), 68, 2)).tolist()}


def test_dwpose_dicts_round_trip_with_the_canvas_size(tmp_path):
    frames = [pose(shift=t, persons=2) for t in range(2)]
    dicts = [to_dwpose(k, 200, 100, missing=("right_knee",)) for k in frames]
    read, size = from_dwpose(dicts, size=(200, 100))
    assert size == (200, 100) and len(read) == 2
    knee = COCO17_NAMES.index("right_knee")
    for got, want in zip(read, frames):
        present = np.arange(17) != knee
        np.testing.assert_allclose(got[:, present, :2], want[:, present, :2], atol=1e-3)
        assert (got[:, present, 2] == 1.0).all()  # the dict keeps no confidence: a listed point scores 1
        assert (got[:, knee] == 0).all()  # subset -1: missing
    # a file: the dicts with their canvas, one frame or a list; without a canvas, normalised points are refused
    single = {**dicts[0], "canvas_width": 200, "canvas_height": 100}
    write_json(tmp_path / "one.json", single)
    (one,), size, fps = read_keypoint_source(tmp_path / "one.json")
    assert size == (200, 100) and fps is None
    np.testing.assert_allclose(one, read[0], atol=1e-5)
    write_json(tmp_path / "bare.json", dicts)
    with pytest.raises(ValueError, match="normalised.*canvas_width"):
        read_keypoint_source(tmp_path / "bare.json")


def test_controlnet_openpose_candidates_keep_their_scores():
    """ControlNet's own OpenPose: candidate rows [x, y, score, id] and subset rows of 20 (total score, part count)."""
    want = pose()[0]
    candidate, row = [], [-1.0] * 20
    for coco, name in enumerate(COCO17_NAMES):
        row[OPENPOSE_18.index(openpose_name(name))] = float(len(candidate))
        candidate.append([float(want[coco, 0]) / 200, float(want[coco, 1]) / 100, float(want[coco, 2]), len(candidate)])
    row[18:] = [12.3, 17]
    (got,), _ = from_dwpose({"bodies": {"candidate": candidate, "subset": [row]}}, size=(200, 100))
    np.testing.assert_allclose(got[0], want, atol=1e-3)


def to_comfyui(people: np.ndarray, width: int, height: int) -> dict:
    """One POSE_KEYPOINT frame: OpenPose-18 x, y normalised by the canvas, c 1 (found) or 0 with x = y = 0 (missing)."""
    encoded = []
    for person in people:
        values = np.zeros((18, 3))
        for coco, name in enumerate(COCO17_NAMES):
            if person[coco, 2] > 0:
                values[OPENPOSE_18.index(openpose_name(name))] = (person[coco, 0] / width, person[coco, 1] / height, 1.0)
        encoded.append({"pose_keypoints_2d": values.reshape(-1).tolist(), "face_keypoints_2d": None,
                        "hand_left_keypoints_2d": None, "hand_right_keypoints_2d": None})  # fmt: skip
    return {"people": encoded, "canvas_width": width, "canvas_height": height}


def test_comfyui_pose_keypoint_uses_the_canvas_size(tmp_path):
    frames = [pose(shift=t, persons=1) * [3.2, 4.8, 1] for t in range(3)]  # in a 640 x 480 canvas
    frames[1][0, COCO17_NAMES.index("nose"), 2] = 0.0  # a missing point
    frames[2] = np.zeros((0, 17, 3), np.float32)  # a frame without people
    write_json(tmp_path / "pose_keypoint.json", [to_comfyui(k, 640, 480) for k in frames])
    read, size, fps = read_keypoint_source(tmp_path / "pose_keypoint.json")
    assert size == (640, 480) and fps is None and len(read) == 3
    np.testing.assert_allclose(read[0][..., :2], frames[0][..., :2], atol=1e-2)  # normalised -> canvas pixels
    assert (read[0][..., 2] == 1.0).all()
    assert (read[1][0, 0] == 0).all() and (read[1][0, 1:, 2] == 1.0).all()
    assert read[2].shape == (0, 17, 3)
    # comfyui_controlnet_aux's DWPose node writes pixels of its canvas: kept as they are
    in_pixels = to_comfyui(frames[0] * [1 / 640, 1 / 480, 1], 1, 1) | {"canvas_width": 640, "canvas_height": 480}
    write_json(tmp_path / "pixels.json", [in_pixels])
    (pixels,), size, _ = read_keypoint_source(tmp_path / "pixels.json")
    np.testing.assert_allclose(pixels[..., :2], frames[0][..., :2], atol=1e-2)
    # one sequence, one frame size
    write_json(tmp_path / "sizes.json", [to_comfyui(frames[0], 640, 480), to_comfyui(frames[0], 320, 240)])
    with pytest.raises(ValueError, match="different canvas sizes"):
        read_keypoint_source(tmp_path / "sizes.json")


def test_mixed_unknown_and_broken_json_are_refused_saying_what_they_hold(tmp_path):
    frame = to_comfyui(pose(), 640, 480)
    write_json(tmp_path / "mixed.json", [frame, to_dwpose(pose(), 200, 100)])
    with pytest.raises(ValueError, match="mixes OpenPose/ComfyUI frames .* and DWPose dicts"):
        read_keypoint_source(tmp_path / "mixed.json")
    write_json(tmp_path / "other.json", {"annotations": [], "images": []})
    with pytest.raises(ValueError, match=r"an object with keys \['annotations', 'images'\]: not a keypoint file"):
        read_keypoint_source(tmp_path / "other.json")
    write_json(tmp_path / "words.json", [{"people": [{"pose_keypoints_2d": ["x", "y", "c"]}]}])
    with pytest.raises(ValueError, match="frame 0: pose_keypoints_2d must be a flat list of numbers"):
        read_keypoint_source(tmp_path / "words.json")
    (tmp_path / "broken.json").write_text("{ not json")
    with pytest.raises(ValueError, match="broken.json is not JSON"):
        read_keypoint_source(tmp_path / "broken.json")
    folder = tmp_path / "folder"
    folder.mkdir()
    write_json(folder / "0.json", frame)
    write_json(folder / "1.json", [frame])
    with pytest.raises(ValueError, match=r"1.json is a list of 1 .*not an OpenPose frame.*1 of the 2"):
        read_keypoint_source(folder)


def test_generate_reads_an_openpose_folder_as_keypoints(export_dir, tmp_path):
    """``training.generate --pose FOLDER`` of OpenPose frames: drawn by our renderer, the keypoints kept in the record."""
    from datasets.clips import CropGeometry
    from datasets.generated import read_record
    from training.generate import main

    frames = walking_keypoints(6, 128)
    folder = tmp_path / "openpose_json"
    folder.mkdir()
    for t, keypoints in enumerate(frames):
        people = [{"pose_keypoints_2d": to_openpose(person, OPENPOSE_18)} for person in keypoints]
        write_json(folder / f"dance_{t:012d}_keypoints.json", {"version": 1.3, "people": people})
    out = tmp_path / "gen" / "dance.mp4"
    argv = ["--model", str(export_dir), "--prompt", "a robot dancing", "--steps", "1", "--window", str(WINDOW)]
    assert main([*argv, "--pose", str(folder), "--frames", "5", "--out", str(out), "--pose-fit", "none"]) == 0
    record = read_record(out)
    assert record["frames"] == 5 and record["pose_source"] == str(folder) and len(record["keypoints"]) == 5
    # the documented frame size of files without a canvas, then (--pose-fit none) the resize + centre crop a pose
    # sequence gets
    points = np.concatenate(frames)[..., :2].reshape(-1, 2)
    width, height = (int(np.ceil(v)) for v in points.max(axis=0) + points.min(axis=0))
    geometry = CropGeometry(width, height, 64, 64)
    for got, want in zip(record["keypoints"], frames):
        mapped = want.copy()
        mapped[..., :2] = want[..., :2] * geometry.scale - np.asarray(geometry.offset)
        np.testing.assert_allclose(np.asarray(got), mapped, atol=1e-3)


def test_read_pose_input_prefers_openpose_frames_and_keeps_image_folders_with_other_json(tmp_path):
    from PIL import Image

    from follow_your_pose.pose_sources import read_pose_input

    folder = tmp_path / "mixed"
    folder.mkdir()
    for t in range(4):
        Image.new("RGB", (32, 32)).save(folder / f"{t:03d}.png")
    write_json(folder / "notes.json", {"made_by": "someone"})  # not keypoints: the skeleton images are read
    images = read_pose_input(folder)
    assert images.frames is not None and images.keypoints is None and len(images) == 4
    (folder / "notes.json").unlink()
    for t in range(4):  # OpenPose's --write_json beside its --write_images: the keypoints are read
        write_json(folder / f"{t:03d}_keypoints.json", {"people": [{"pose_keypoints_2d": to_openpose(pose(t)[0], BODY_25)}]})
    keypoints = read_pose_input(folder, stride=2, limit=1)
    assert keypoints.frames is None and len(keypoints) == 1 and keypoints.fps is None
    np.testing.assert_allclose(keypoints.keypoints[0], pose(0), atol=1e-4)
