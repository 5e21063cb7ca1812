"""The registered toy metrics through ``python -m evaluation.run`` on the toy world's oracle videos (known answers)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from datasets.toy_world import read_spec
from evaluation.run import main as evaluate_main
from evaluation.sample import load_sample
from evaluation.toy_metrics import border_colour, pose_iou, video_pose_iou
from pipelines.build_toy_world import main as build_main
from pose_extraction.figure import FigureStyle, silhouette

WORLD = dict(
    size=64, images=2, images_per_shard=2, clips=1, clips_per_shard=1, clip_frames=8, eval_videos=4,
    eval_frames=8, eval_long_videos=1, eval_long_frames=12,
)  # fmt: skip
METRICS = "pose_iou,prompt_fidelity,background_stability"


@pytest.fixture(scope="module")
def oracle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("toy_eval") / "world"
    argv = ["--output", str(out), "--seed", "5"] + [f"--{k.replace('_', '-')}={v}" for k, v in WORLD.items()]
    assert build_main(argv) == 0
    return out / "eval"


def _evaluate(videos: Path, out: Path) -> dict:
    assert evaluate_main(["--videos", str(videos), "--out", str(out), "--metrics", METRICS, "--bootstrap", "50", "--quiet", "--no-report"]) == 0
    return json.loads((out / "results.json").read_text())


def test_oracle_scores_its_encoding_limited_iou_and_the_control_is_lower(oracle, tmp_path):
    results = _evaluate(oracle / "oracle", tmp_path / "run")
    spec = read_spec(oracle)
    named, own = [], []
    for entry in spec["entries"]:  # the same IoUs computed directly from the spec, frame by frame
        sample = load_sample(oracle / entry["oracle"])
        style = FigureStyle(**spec["figure_style"])
        masks = np.stack([silhouette(k, entry["height"], entry["width"], style) for k in sample.keypoints])
        named.append(video_pose_iou(sample.frames, masks, entry["background_rgb"], spec["mask_tolerance"]).mean())
        own.append(np.mean([pose_iou(f, m, border_colour(f), spec["mask_tolerance"]) for f, m in zip(sample.frames, masks)]))
    pose = results["metrics"]["pose_iou"]
    assert pose["videos"] == len(spec["entries"]) == 5 and pose["skipped"] == 0
    assert pose["aggregate"]["pose_iou"] == pytest.approx(np.mean(own), abs=1e-9)
    assert pose["aggregate"]["pose_iou_named"] == pytest.approx(np.mean(named), abs=1e-9)
    for figure in ("pose_iou", "pose_iou_named"):
        assert pose["aggregate"][figure] > 0.8, "the oracle through H.264 scores near 1"
        assert pose["aggregate"][f"{figure}_shuffled"] < 0.5 * pose["aggregate"][figure]
        low, high = pose["ci"][f"{figure}_shuffled"]
        assert low <= pose["aggregate"][f"{figure}_shuffled"] <= high
    fidelity = results["metrics"]["prompt_fidelity"]["aggregate"]
    assert fidelity["prompt_fidelity"] == 1.0 and fidelity["background_colour_ok"] == 1.0
    stability = results["metrics"]["background_stability"]["aggregate"]
    assert stability["background_stability"] > 0.99 and stability["background_colour_drift"] < 5
    assert stability["frame_cosine"] > 0.8


def test_generated_records_without_toy_settings_are_read_from_the_prompt(oracle, tmp_path):
    """A generator's record names colours only in its prompt; a non-toy prompt is skipped with its reason."""
    videos = tmp_path / "generated"
    shutil.copytree(oracle / "oracle", videos)
    records = sorted(videos.glob("*.json"))
    for path in records:
        record = json.loads(path.read_text())
        record["settings"] = {}
        path.write_text(json.dumps(record))
    stray = json.loads(records[0].read_text())
    stray["prompt"] = "a photo of a cat"
    records[0].write_text(json.dumps(stray))
    with_toy = {row["key"]: row["values"] for row in _evaluate(oracle / "oracle", tmp_path / "a")["videos"]}
    results = _evaluate(videos, tmp_path / "b")
    assert results["metrics"]["pose_iou"]["skipped"] == 1
    skipped = [row for row in results["videos"] if row["skipped"]]
    assert len(skipped) == 1 and "not a toy-world video" in skipped[0]["skipped"]["pose_iou"]
    for row in results["videos"]:
        if not row["skipped"]:
            assert row["values"]["pose_iou"] == pytest.approx(with_toy[row["key"]]["pose_iou"])
            assert row["values"]["prompt_fidelity"] == 1.0


def test_a_figure_in_the_wrong_colours_fails_prompt_fidelity_and_named_iou_but_keeps_its_iou(oracle, tmp_path):
    videos = tmp_path / "swapped"
    shutil.copytree(oracle / "oracle", videos)
    for path in sorted(videos.glob("*.json")):  # the prompt names the colours the other way round
        record = json.loads(path.read_text())
        toy = record["settings"]["toy"]
        toy["figure"], toy["background"] = toy["background"], toy["figure"]
        record["settings"] = {}
        record["prompt"] = f"a {toy['figure']} figure on a {toy['background']} background"
        path.write_text(json.dumps(record))
    results = _evaluate(videos, tmp_path / "run")
    right = _evaluate(oracle / "oracle", tmp_path / "right")["metrics"]["pose_iou"]["aggregate"]
    assert results["metrics"]["prompt_fidelity"]["aggregate"]["prompt_fidelity"] == 0.0
    pose = results["metrics"]["pose_iou"]["aggregate"]
    assert pose["pose_iou_named"] < 0.5, "the named background is the figure's colour: the real background is taken for the figure"
    assert pose["pose_iou"] == pytest.approx(right["pose_iou"]) and pose["pose_iou"] > 0.8, "the frame's own background"


def test_generated_records_carry_the_worlds_figure_style_from_the_spec(tmp_path):
    """A world drawn with thick limbs: its spec's items give each generated record the world's ``toy`` reference, and
    pose IoU draws the input silhouettes in that style (a record naming colours only in its prompt gets the default
    style and scores lower on the very same frames)."""
    from datasets.toy_world import reference
    from evaluation.spec import read_spec as read_generation_spec

    world = tmp_path / "world"
    thick = {**WORLD, "eval_long_videos": 0, "limb_width": 0.8, "head_radius": 0.7}
    assert build_main(["--output", str(world), "--seed", "3"] + [f"--{k.replace('_', '-')}={v}" for k, v in thick.items()]) == 0
    spec = read_spec(world / "eval")
    items = {item["key"]: item for item in read_generation_spec(world / "eval" / "spec.json")}
    assert len(items) == len(spec["entries"]) == 4
    generated, prompt_only = tmp_path / "generated", tmp_path / "prompt_only"
    for folder, with_reference in ((generated, True), (prompt_only, False)):
        shutil.copytree(world / "eval" / "oracle", folder)
        for path in sorted(folder.glob("*.json")):
            record = json.loads(path.read_text())
            item = items[record["key"]]
            assert item["toy"] == reference(spec, *(record["settings"]["toy"][k] for k in ("figure", "background")))
            assert item["toy"]["figure_style"]["limb_width"] == 0.8
            record["settings"] = {"toy": item["toy"]} if with_reference else {}  # as training.generate writes them
            path.write_text(json.dumps(record))
    oracle = _evaluate(world / "eval" / "oracle", tmp_path / "a")["metrics"]["pose_iou"]["aggregate"]["pose_iou"]
    scored = _evaluate(generated, tmp_path / "b")["metrics"]["pose_iou"]["aggregate"]["pose_iou"]
    default_style = _evaluate(prompt_only, tmp_path / "c")["metrics"]["pose_iou"]["aggregate"]["pose_iou"]
    assert scored == pytest.approx(oracle) and scored > 0.8
    assert default_style < scored - 0.1, "the default thin-limbed silhouette covers only part of the thick figure"
