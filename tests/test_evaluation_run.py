"""``python -m evaluation.run`` end to end: real mp4 files, the real pose estimator, a tiny CLIP and the tiny
Follow-Your-Pose pipeline; resume; comparison; bad input with clear errors."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from datasets.atomic import TEMP_MARKER
from evaluation.run import main
from tests.test_metrics import person, save_tiny_clip, write_generated_video
from tests.test_pose_mmpose import FAST, checkpoints  # noqa: F401  (fixture: random MMPose models saved as checkpoints)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


def still_videos(folder, count: int = 2, frames: int = 5, **kwargs):
    """Small synthetic videos of a moving square with the standing person as their input pose."""
    for index in range(count):
        video = np.full((frames, 64, 64, 3), 40 + 30 * index, np.uint8)
        for t in range(frames):
            video[t, 20:40, 10 + 3 * t : 30 + 3 * t] = (220, 120, 60)
        write_generated_video(folder, f"clip{index}", video, [person(dx=t) for t in range(frames)],
                              f"a square moving {index}", **kwargs)
    return folder


def read_results(out):
    return json.loads((out / "results.json").read_text())


def test_bad_inputs_are_rejected_with_reasons_and_the_rest_is_scored(tmp_path, capsys):
    videos = still_videos(tmp_path / "videos", count=1)
    frames = np.zeros((6, 64, 64, 3), np.uint8)
    write_generated_video(videos, "short", frames, [person()] * 6, "missing frames", video_frames=4)
    write_generated_video(videos, "posefew", frames, [person()] * 6, "pose too short", pose_frames=3)
    (videos / "garbage.mp4").write_bytes(b"not a video at all")
    (videos / "garbage.json").write_text((videos / "clip0.json").read_text())
    out = tmp_path / "out"
    assert main(["--videos", str(videos), "--out", str(out), "--metrics", "temporal_flickering", "--quiet"]) == 0
    results = read_results(out)
    reasons = {r["key"]: r["reason"] for r in results["rejected"]}
    assert "missing frames" in reasons["short"] and "4 decodable frames" in reasons["short"]
    assert "pose video has 3 frames" in reasons["posefew"]
    assert "could not be decoded" in reasons["garbage"] or "no decodable frame" in reasons["garbage"]
    assert results["counts"] == {"videos": 4, "evaluated": 1, "rejected": 3}
    assert [v["key"] for v in results["videos"]] == ["clip0"]
    assert "1 evaluated, 3 rejected" in capsys.readouterr().out


def test_empty_folder_unknown_metric_and_nothing_usable_are_clear_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["--videos", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--metrics", "temporal_flickering"])
    assert exit_info.value.code == 2 and "no generated videos in" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--videos", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--metrics", "clip,fvd_typo"])
    assert exit_info.value.code == 2
    from evaluation.metrics.registry import metric_names

    err = capsys.readouterr().err
    assert f"unknown metric(s) 'fvd_typo'; valid metrics: {', '.join(sorted(metric_names()))}" in err
    assert all(name in err for name in ("clip", "frame_consistency", "pose_ap"))
    broken = tmp_path / "broken"
    write_generated_video(broken, "a", np.zeros((4, 32, 32, 3), np.uint8), [person()] * 4, "x", video_frames=2)
    with pytest.raises(SystemExit):
        main(["--videos", str(broken), "--out", str(tmp_path / "o"), "--metrics", "temporal_flickering"])
    assert "none of the 1 videos" in capsys.readouterr().err
    usable = still_videos(tmp_path / "usable", count=1, frames=2)
    with pytest.raises(SystemExit):
        main(["--videos", str(usable), "--out", str(tmp_path / "o"), "--metrics", "clip", "--clip-model", str(tmp_path / "no-clip")])
    assert "could not load the CLIP backbone" in capsys.readouterr().err


def test_a_stopped_run_resumes_from_cached_states_and_changed_files_are_rescored(tmp_path):
    videos = still_videos(tmp_path / "videos", count=3)
    out = tmp_path / "out"
    args = ["--videos", str(videos), "--out", str(out), "--metrics", "temporal_flickering,warping_error",
            "--no-report", "--quiet"]
    assert main(args) == 0
    first = read_results(out)
    assert first["timings"]["pixels/flicker"] > 0 and first["timings"]["pixels/flow"] > 0
    states = sorted((out / "states").rglob("*.json"))
    assert len(states) == 6 and not [p for p in out.rglob("*") if TEMP_MARKER in p.name]
    assert main(args) == 0
    second = read_results(out)
    assert "pixels/flicker" not in second["timings"]  # nothing recomputed
    assert second["metrics"] == first["metrics"] and second["videos"] == first["videos"]
    time.sleep(0.01)
    os.utime(videos / "clip1.mp4")  # a file changed since: only that video is scored again
    assert main(args) == 0
    assert read_results(out)["timings"]["pixels/flicker"] > 0
    assert main([*args, "--no-resume"]) == 0


def test_compare_prints_a_table_like_the_papers_and_writes_html(tmp_path, capsys):
    runs = []
    for name, count in (("baseline", 2), ("ours", 3)):
        videos = still_videos(tmp_path / f"videos_{name}", count=count)
        out = tmp_path / name
        assert main(["--videos", str(videos), "--out", str(out), "--metrics", "temporal_flickering", "--no-report", "--quiet"]) == 0
        runs.append(out)
    capsys.readouterr()
    assert main(["--compare", *map(str, runs), "--out", str(tmp_path / "cmp"), "--paper"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].startswith("| Method | Temporal flickering ↑")
    assert "| baseline |" in table and "| ours |" in table and "Follow-Your-Pose (paper)" in table
    assert table.count("**") == 2  # exactly one best value, in bold
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert "Run comparison" in page and "baseline" in page and "http" not in page.replace('"http://www.w3.org', "")
    results = read_results(runs[1])
    results["clip_backbone"] = {"model": "openai/clip-vit-large-patch14"}
    results["metrics"]["clip"] = {**results["metrics"]["temporal_flickering"], "figures": ["clip_score"]}
    (runs[1] / "results.json").write_text(json.dumps(results))
    other = read_results(runs[0])
    other["metrics"]["clip"] = results["metrics"]["clip"]
    (runs[0] / "results.json").write_text(json.dumps(other))
    assert main(["--compare", *map(str, runs), "--out", str(tmp_path / "cmp")]) == 0
    assert "CLIP backbones differ" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--compare", str(tmp_path / "nothing_here")])


def test_real_photos_score_high_pose_ap_with_the_mediapipe_backend(tmp_path, tiny_clip, people_photos):
    """Frames of a real photo of a person drift a few pixels; the ground truth is the pose MediaPipe finds on the
    undrifted frames, so the re-detected pose on the encoded video must match it closely."""
    from PIL import Image

    from pose_extraction.backends import PoseConfig, build_estimator

    photo = np.asarray(Image.fromarray(people_photos["astronaut"]).resize((256, 256)))
    frames = np.stack([np.roll(photo, 2 * t, axis=1) for t in range(4)])
    estimator = build_estimator(PoseConfig(backend="mediapipe"))
    try:
        truth = [p.keypoints for p in estimator(list(frames))]
    finally:
        estimator.close()
    assert all(len(k) == 1 for k in truth)
    videos = tmp_path / "videos"
    write_generated_video(videos, "astronaut", frames, truth, "an astronaut in a white suit")
    write_generated_video(videos, "nopose", frames, None, "an astronaut, pose given as images")
    out = tmp_path / "out"
    assert main(["--videos", str(videos), "--out", str(out), "--metrics", "clip,pose_ap,frame_consistency",
                 "--clip-model", str(tiny_clip), "--pose-backend", "mediapipe", "--bootstrap", "100", "--quiet"]) == 0
    results = read_results(out)
    pose = results["metrics"]["pose_ap"]
    assert pose["videos"] == 1 and pose["skipped"] == 1 and pose["aggregate"]["pose_ap"] > 60
    assert pose["aggregate"]["pose_ap50"] == pytest.approx(100.0)
    by_key = {v["key"]: v for v in results["videos"]}
    assert "no input keypoints" in by_key["nopose"]["skipped"]["pose_ap"]
    assert by_key["nopose"]["values"]["clip_score"] is not None
    clip = results["metrics"]["clip"]
    assert clip["aggregate"]["clip_score"] == pytest.approx(np.mean([v["values"]["clip_score"] for v in results["videos"]]))
    assert clip["ci"]["clip_score"][0] <= clip["aggregate"]["clip_score"] <= clip["ci"]["clip_score"][1]
    assert results["clip_backbone"]["model"] == str(tiny_clip) and results["clip_backbone"]["image_size"] == 32
    assert results["model_ids"] == ["tiny-test"] and results["data_ids"] == ["synthetic-poses"]
    assert results["config"]["pose"]["backend"] == "mediapipe" and results["config"]["seed"] == 0
    assert (out / "report.html").exists() and (out / "media" / "astronaut.pose.gif").exists()


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """A stage-2 export of the tiny random Follow-Your-Pose model (base.json, pose_encoder/, unet/)."""
    from follow_your_pose.models import ControlEncoder, InflatedUNet, save_inflated
    from follow_your_pose.tiny import TinySDConfig, save_tiny_sd

    root = tmp_path_factory.mktemp("fyp")
    tiny = TinySDConfig()
    base = save_tiny_sd(root / "base", tiny)
    model = root / "model"
    save_inflated(InflatedUNet.from_pretrained(base, subfolder="unet").inflate(), model / "unet", base=str(base))
    ControlEncoder(channels=tiny.unet_channels).save_pretrained(model / "pose_encoder")
    (model / "base.json").write_text(json.dumps({"pretrained": str(base), "revision": None}))
    return model


def write_pose_sequence(folder, frames: int, size: int = 64) -> None:
    """A pose sequence in the layout ``python -m pose_extraction.video`` writes (keypoints.json)."""
    from datasets.pose_sequence import (
        KIND,
        SCHEMA_VERSION,
        PoseSequence,
        write_keypoints,
    )

    folder.mkdir(parents=True)
    keypoints = [person(dx=t) for t in range(frames)]
    header = {"schema": KIND, "schema_version": SCHEMA_VERSION, "fps": 8.0, "width": size, "height": size, "frames": frames}
    sequence = PoseSequence(
        header=header, keypoints=keypoints, boxes=[np.zeros((1, 4), np.float32)] * frames,
        box_scores=[np.ones(1, np.float32)] * frames, track_ids=[[0]] * frames,
        times=[i / 8.0 for i in range(frames)], source_frames=list(range(frames)),
    )
    write_keypoints(folder, sequence, "json")


def test_spec_is_checked_before_any_model_loads(tmp_path):
    from evaluation.spec import generation_configs, read_spec

    write_pose_sequence(tmp_path / "pose", 3)
    spec = tmp_path / "spec.json"
    for items, message in (
        ([{"prompt": "a", "pose": "pose", "key": "x"}, {"prompt": "b", "pose": "pose", "key": "x"}], "repeated: x"),
        ([{"prompt": "a", "pose": "nowhere"}], "does not exist"),
        ([{"pose": "pose"}], "has no prompt"),
        ([], "has no items"),
    ):
        spec.write_text(json.dumps({"items": items}))
        with pytest.raises(ValueError, match=message):
            read_spec(spec)
    spec.write_text(json.dumps({"defaults": {"stepz": 3}, "items": [{"prompt": "a", "pose": "pose"}]}))
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['stepz'\]; valid: .*guidance_scale"):
        generation_configs(read_spec(spec), tmp_path, tmp_path / "gen")
    spec.write_text("\n".join(json.dumps({"prompt": p, "pose": "pose", "seed": s, "lora": f"l{s}"}) for p, s in (("a", 0), ("b", 1))))
    jsonl = spec.rename(tmp_path / "spec.jsonl")
    with pytest.raises(ValueError, match="different 'lora'"):
        generation_configs(read_spec(jsonl), tmp_path, tmp_path / "gen")


@pytest.mark.slow
def test_spec_generates_with_the_tiny_pipeline_then_evaluates_and_resumes(tmp_path, tiny_export, tiny_clip):
    write_pose_sequence(tmp_path / "poses" / "walk", 4)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({
        "defaults": {"steps": 1, "window": 4, "frames": 4, "guidance_scale": 3.0},
        "items": [
            {"key": "robot", "prompt": "a robot dancing", "pose": "poses/walk", "seed": 1},
            {"key": "knight", "prompt": "a knight walking", "pose": "poses/walk", "seed": 2},
            {"key": "toolong", "prompt": "too many frames", "pose": "poses/walk", "frames": 9},
        ],
    }))
    out = tmp_path / "run"
    args = ["--spec", str(spec), "--model", str(tiny_export), "--out", str(out), "--metrics",
            "clip,frame_consistency,pose_ap,temporal_flickering", "--clip-model", str(tiny_clip),
            "--pose-backend", "mediapipe", "--bootstrap", "50", "--quiet", "--generate-options", '{"pose_guidance": true}']
    with pytest.raises(SystemExit) as refused:
        main([*args[:-1], '{"pose_guidence": true}'])
    assert refused.value.code == 2 and not (out / "generated" / "robot.mp4").exists()
    assert main(args) == 0
    generation = json.loads((out / "generated" / "generation.json").read_text())
    assert sorted(generation["generated"]) == ["knight", "robot"] and generation["failed"][0]["key"] == "toolong"
    for key in ("knight", "robot"):
        assert json.loads((out / "generated" / f"{key}.json").read_text())["settings"]["pose_guidance"] is True
    results = read_results(out)
    assert [v["key"] for v in results["videos"]] == ["knight", "robot"]
    assert results["model_ids"] == [str(tiny_export)]
    assert results["metrics"]["pose_ap"]["videos"] == 2  # the records carry the input keypoints
    assert all(v["values"]["clip_score"] is not None for v in results["videos"])
    assert (out / "report.html").exists()
    assert main(args) == 0  # resumed: nothing generated again, nothing rescored
    assert json.loads((out / "generated" / "generation.json").read_text())["already_done"] == 2
    assert "forward/clip" not in read_results(out)["timings"]


def test_toy_world_spec_entries_become_items(tmp_path):
    from evaluation.spec import read_spec

    write_pose_sequence(tmp_path / "poses" / "k0", 3)
    entry = {"key": "k0", "set": "short", "prompt": "a red figure on blue", "figure": "red", "frames": 3, "fps": 8.0,
             "width": 64, "height": 64, "seed": 7, "pose": "poses/k0", "oracle": "oracle/k0.mp4"}
    (tmp_path / "spec.json").write_text(json.dumps({"schema": "toy_eval_spec", "schema_version": 1, "entries": [entry]}))
    item, = read_spec(tmp_path / "spec.json")
    assert item == {"key": "k0", "prompt": "a red figure on blue", "pose": str((tmp_path / "poses" / "k0").resolve()),
                    "frames": 3, "seed": 7, "width": 64, "height": 64, "fps": 8.0}


@pytest.mark.slow
def test_pose_ap_through_the_mmpose_backend_with_checkpoints_from_disk(tmp_path, checkpoints):
    """The HRNet + RTMDet path a user takes (--pose-checkpoint/--det-checkpoint), on models that are random but
    nudged to propose people (see tests/test_pose_mmpose.py): the plumbing must score every frame."""
    pose, det, _ = checkpoints
    videos = still_videos(tmp_path / "videos", count=1, frames=2)
    out = tmp_path / "out"
    assert main(["--videos", str(videos), "--out", str(out), "--metrics", "pose_ap", "--pose-backend", "mmpose",
                 "--pose-checkpoint", pose, "--det-checkpoint", det, "--det-max-persons", "2",
                 "--pose-extra", json.dumps(FAST), "--bootstrap", "20", "--no-report", "--quiet"]) == 0
    results = read_results(out)
    metric = results["metrics"]["pose_ap"]
    assert metric["videos"] == 1 and metric["settings"]["backend"] == "mmpose"
    assert metric["settings"]["pose_checkpoint"] == pose and 0.0 <= metric["aggregate"]["pose_ap"] <= 100.0
    state = json.loads(next((out / "states" / "pose_ap").glob("*.json")).read_text())["state"]
    assert len(state["dt"]) == 2 and sum(len(frame) for frame in state["dt"]) > 0  # people were found and scored
