"""The pose-backend registry: names, per-backend configs, flags of the command lines, a backend added at test
time, and the pose-AP cache key covering the whole backend config (and the content of the files it names)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from evaluation.config import EvalConfig
from evaluation.evaluator import evaluate_folder, fingerprint
from evaluation.metrics import MetricContext
from evaluation.metrics.pose_ap import PoseAP
from pose_extraction.backends import BACKENDS, Backend, PoseConfig, backend, build_estimator, option_names
from pose_extraction.estimator import BackendConfig, Poses
from pose_extraction.mediapipe_backend import MediaPipeConfig
from pose_extraction.mmpose_backend import MMPoseConfig
from tests.test_evaluation_run import read_results, still_videos
from tests.test_metrics import person


@dataclass(frozen=True, kw_only=True)
class FixedConfig(BackendConfig):
    """A test-only backend: the same person on every image."""

    score: float = 0.9
    """Keypoint and box score of the person."""
    weights: str | None = None
    """A file it claims to read (stands for a checkpoint)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.score <= 1.0:
            raise ValueError("score must be in (0, 1]")


class FixedEstimator:
    calls: list[int] = []
    """Images seen, per call, by every instance (so a test sees whether the cache was used)."""

    def __init__(self, config: FixedConfig) -> None:
        self.config = config
        self.name = "fixed/standing-person"

    def __call__(self, images) -> list[Poses]:
        FixedEstimator.calls.append(len(images))
        keypoints = person().copy()
        keypoints[..., 2] = self.config.score
        return [Poses(keypoints, np.array([[0, 0, 40, 60]], np.float32), [self.config.score]) for _ in images]


@pytest.fixture
def fixed_backend(monkeypatch):
    """The test backend registered as ``fixed``: the one line a new backend adds to the registry."""
    monkeypatch.setitem(BACKENDS, "fixed", Backend(FixedConfig, FixedEstimator))
    FixedEstimator.calls.clear()
    yield


# ---------------------------------------------------------------- registry and configs


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown pose backend 'openpose'; choose one of mediapipe, mmpose"):
        PoseConfig(backend="openpose")
    with pytest.raises(ValueError, match="choose one of mediapipe, mmpose"):
        backend("")
    with pytest.raises(ValueError, match="takes MMPoseConfig options, got MediaPipeConfig"):
        PoseConfig(backend="mmpose", options=MediaPipeConfig())
    with pytest.raises(ValueError, match="mediapipe pose backend has no option det_checkpoint; its options: min_detection"):
        PoseConfig.of("mediapipe", det_checkpoint="x.pth")


def test_defaults_and_options_per_backend():
    assert PoseConfig() == PoseConfig(backend="mediapipe", options=MediaPipeConfig())
    assert PoseConfig.of("mmpose", det_max_persons=2).options == MMPoseConfig(det_max_persons=2)
    assert PoseConfig.of("mediapipe").settings() == {
        "backend": "mediapipe", "min_detection_confidence": 0.5, "max_persons": 1, "model_complexity": 1,
    }
    assert "pose_checkpoint" in option_names("mmpose") and "pose_checkpoint" not in option_names("mediapipe")
    with pytest.raises(TypeError):
        MMPoseConfig("td-hm")  # keyword-only


@pytest.mark.parametrize("config, changes, message", [
    (MediaPipeConfig, {"model_complexity": 3}, "model_complexity must be 0, 1 or 2"),
    (MediaPipeConfig, {"max_persons": 0}, "at least 1"),
    (MediaPipeConfig, {"min_detection_confidence": 1.5}, r"\[0, 1\]"),
    (MMPoseConfig, {"batch_size": 0}, "batch_size"),
    (MMPoseConfig, {"det_score_threshold": 1.0}, "det_score_threshold"),
    (MMPoseConfig, {"det_max_persons": 0}, "at least 1"),
    (MMPoseConfig, {"nms_iou_threshold": 0.0}, "nms_iou_threshold"),
    (MMPoseConfig, {"pose_cfg_options": {1: False}}, "pose_cfg_options"),
])  # fmt: skip
def test_each_backend_config_checks_its_fields(config, changes, message):
    with pytest.raises(ValueError, match=message):
        config(**changes)


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_backend_configs_are_frozen_keyword_only_and_document_every_field(name):
    config = BACKENDS[name].config
    assert issubclass(config, BackendConfig) and config.__dataclass_params__.frozen
    assert all(f.kw_only for f in dataclasses.fields(config))
    body = ast.parse(inspect.getsource(config)).body[0].body
    documented = {
        statement.target.id for statement, after in zip(body, body[1:])
        if isinstance(statement, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
    }  # fmt: skip
    assert set(option_names(name)) <= documented
    with pytest.raises(dataclasses.FrozenInstanceError):
        config().__setattr__(option_names(name)[0], None)


# ---------------------------------------------------------------- command lines


def test_a_flag_of_another_backend_is_refused_naming_it(tmp_path, capsys):
    from evaluation.run import main as evaluate
    from pipelines.laion_pose.cli import parse_config
    from pose_extraction.video import main as video

    with pytest.raises(SystemExit) as exit_:
        evaluate(["--videos", str(tmp_path), "--out", str(tmp_path / "o"), "--pose-backend", "mediapipe", "--det-checkpoint", "d.pth"])
    assert exit_.value.code == 2
    assert "--det-checkpoint is an option of the mmpose pose backend, not of mediapipe" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        video([str(tmp_path / "v.mp4"), "--out", str(tmp_path), "--device", "cpu"])
    assert exit_.value.code == 2 and "--device is an option of the mmpose pose backend" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--pose-batch-size is an option of the mmpose pose backend, not of mediapipe"):
        parse_config(["--pose-batch-size", "4"])
    with pytest.raises(ValueError, match="--person-batch-size is an option of the mmpose pose backend, not of mediapipe"):
        parse_config(["--person-batch-size", "4"])
    with pytest.raises(ValueError, match="unknown pose backend 'hrnet'; choose one of mediapipe, mmpose"):
        parse_config(["--pose-backend", "hrnet"])
    with pytest.raises(ValueError, match="--pose-extra pose_cfg_options is an option of the mmpose"):
        from evaluation.run import parse_command, to_eval_config

        to_eval_config(parse_command(["--videos", "v", "--pose-extra", '{"pose_cfg_options": {}}']))


def test_shared_flags_fill_the_backend_that_has_them():
    from evaluation.run import parse_command, to_eval_config
    from pipelines.laion_pose.cli import parse_config as laion_config
    from pose_extraction.video_cli import parse_command as video_command

    def config_from_args(argv):
        return to_eval_config(parse_command(argv))

    def video_config(argv):
        return video_command(argv).to_video_config()

    config = config_from_args(["--videos", "v", "--device", "cpu", "--pose-batch-size", "4"])
    assert config.pose == PoseConfig() and config.pose_frames_per_call == 4  # mediapipe has no device nor batch
    config = config_from_args(
        ["--videos", "v", "--device", "cpu", "--pose-batch-size", "4", "--pose-backend", "mmpose", "--det-max-persons", "2"])
    assert config.pose.options == MMPoseConfig(device="cpu", batch_size=4, det_max_persons=2) and config.pose_frames_per_call == 4
    laion = laion_config(["--max-persons", "3"])
    assert laion.stage.pose.options == MediaPipeConfig(max_persons=3)
    laion = laion_config(["--max-persons", "3", "--pose-backend", "mmpose", "--allow-random-weights"])
    assert laion.stage.pose.options == MMPoseConfig(det_max_persons=3, allow_random_weights=True)
    assert video_config(["v.mp4", "--out", "o"]).pose.options == MediaPipeConfig(max_persons=1)
    video = video_config(["v.mp4", "--out", "o", "--pose-backend", "mmpose", "--device", "cpu"])
    assert video.pose.options == MMPoseConfig(device="cpu", det_max_persons=1)


# ---------------------------------------------------------------- a backend added at test time


def test_a_registered_backend_runs_through_the_registry_and_the_command_line(fixed_backend, tmp_path, capsys):
    from evaluation.run import main as evaluate

    estimator = build_estimator(PoseConfig.of("fixed", score=0.5))
    (poses,) = estimator([np.zeros((8, 8, 3), np.uint8)])
    assert poses.keypoints.shape == (1, 17, 3) and np.all(poses.keypoints[..., 2] == 0.5)
    with pytest.raises(ValueError, match="score must be"):
        PoseConfig.of("fixed", score=0.0)
    videos, out = still_videos(tmp_path / "videos", count=1, frames=3), tmp_path / "out"
    FixedEstimator.calls.clear()
    assert evaluate(["--videos", str(videos), "--out", str(out), "--metrics", "pose_ap", "--pose-backend", "fixed",
                     "--pose-extra", '{"score": 0.8}', "--bootstrap", "0", "--no-report", "--quiet"]) == 0
    metric = read_results(out)["metrics"]["pose_ap"]
    assert metric["settings"]["backend"] == "fixed" and metric["settings"]["score"] == 0.8 and metric["videos"] == 1
    assert FixedEstimator.calls == [3]
    with pytest.raises(SystemExit):
        evaluate(["--videos", str(videos), "--out", str(out), "--pose-backend", "fixed", "--pose-checkpoint", "p.pth"])
    assert "--pose-checkpoint is an option of the mmpose pose backend, not of fixed" in capsys.readouterr().err


# ---------------------------------------------------------------- the pose-AP cache key


def _pose_ap_key(pose: PoseConfig, video: Path) -> str:
    with MetricContext(EvalConfig(metrics=("pose_ap",), pose=pose)) as context:
        return fingerprint(PoseAP(context), video)


@pytest.mark.parametrize("name, change", [
    ("mediapipe", {"max_persons": 2}),  # the old key held no mediapipe option at all
    ("mediapipe", {"model_complexity": 0}),
    ("mmpose", {"det_score_threshold": 0.3}),  # the old key held the mmpose configs and weights only
    ("mmpose", {"pose_cfg_options": {"model.test_cfg.flip_test": False}}),
])  # fmt: skip
def test_every_backend_option_is_in_the_pose_ap_cache_key(tmp_path, name, change):
    video = still_videos(tmp_path, count=1, frames=2) / "clip0.mp4"
    assert _pose_ap_key(PoseConfig.of(name, **change), video) != _pose_ap_key(PoseConfig.of(name), video)
    assert _pose_ap_key(PoseConfig.of(name, **change), video) == _pose_ap_key(PoseConfig.of(name, **change), video)


def test_a_rewritten_checkpoint_changes_the_pose_ap_cache_key(tmp_path):
    video = still_videos(tmp_path, count=1, frames=2) / "clip0.mp4"
    weights = tmp_path / "det.pth"
    weights.write_bytes(b"first weights")
    pose = PoseConfig.of("mmpose", pose_checkpoint="https://example.org/pose.pth", det_checkpoint=str(weights))
    before = _pose_ap_key(pose, video)
    weights.write_bytes(b"other weights")  # same path, same size
    assert _pose_ap_key(pose, video) != before


def _evaluate(videos: Path, out: Path, **options) -> dict:
    config = EvalConfig(metrics=("pose_ap",), pose=PoseConfig.of("fixed", **options), bootstrap=0, report=False)
    return evaluate_folder(videos, out, config)


def test_cached_pose_ap_states_are_reused_only_for_the_same_backend_config(fixed_backend, tmp_path):
    videos, out = still_videos(tmp_path / "videos", count=2, frames=3), tmp_path / "out"
    weights = tmp_path / "fixed.bin"
    weights.write_bytes(b"a")
    _evaluate(videos, out, score=0.9, weights=str(weights))
    assert FixedEstimator.calls == [3, 3]
    _evaluate(videos, out, score=0.9, weights=str(weights))
    assert FixedEstimator.calls == [3, 3]  # same settings: both videos from the cache
    changed = _evaluate(videos, out, score=0.6, weights=str(weights))
    assert FixedEstimator.calls == [3, 3] * 2  # one option changed: scored again
    state = json.loads((out / "states" / "pose_ap" / "clip0.json").read_text())["state"]
    assert state["dt"][0][0]["score"] == pytest.approx(0.6 * 0.6)
    assert changed["metrics"]["pose_ap"]["settings"]["score"] == 0.6
    weights.write_bytes(b"b")
    _evaluate(videos, out, score=0.6, weights=str(weights))
    assert FixedEstimator.calls == [3, 3] * 3  # the file behind an option changed: scored again
