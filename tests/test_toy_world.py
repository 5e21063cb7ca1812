"""The toy world: poses within limits, figures exactly where their keypoints say, captions naming their colours,
and shards/sets that the project's own readers (LAION-Pose, clips, pose sequences, generated videos) read back."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from datasets import clip_reader, clips, laion_pose
from evaluation.toy_metrics import video_pose_iou
from pipelines.build_toy_world import main
from pipelines.toy_world import poses
from pipelines.toy_world.captions import PALETTE, held_out_pairs, make_caption, parse_caption, training_pairs
from pipelines.toy_world.config import ToyWorldConfig
from pose_extraction.figure import silhouette
from datasets.toy_world import read_spec
from pipelines.toy_world.samples import draw_sample
from pose_extraction.skeleton import render_skeleton

SMALL = dict(
    size=64, images=24, images_per_shard=10, clips=4, clips_per_shard=2, clip_frames=30, eval_videos=3,
    eval_frames=8, eval_long_videos=1, eval_long_frames=20,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[ToyWorldConfig, Path]:
    out = tmp_path_factory.mktemp("toy") / "world"
    argv = ["--output", str(out), "--seed", "3"] + [f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]
    assert main(argv) == 0
    return ToyWorldConfig(output=str(out), seed=3, **SMALL), out


def test_inverse_kinematics_recovers_the_sampled_angles_and_they_respect_the_limits():
    rng = np.random.default_rng(0)
    for _ in range(200):
        params, body = poses.sample_params(rng), poses.Proportions.sample(rng)
        assert poses.within_limits(params)
        recovered = poses.joint_angles(poses.keypoints_from_params(params, body))
        for name, angle in recovered.items():
            assert angle == pytest.approx(params[poses.INDEX[name]], abs=1e-6), name
    assert not poses.within_limits(np.where(np.arange(len(poses.NAMES)) == poses.INDEX["left_elbow"], 170.0, 0.0))


def test_still_figures_are_exactly_their_silhouettes_in_the_caption_colours():
    config = ToyWorldConfig(output="unused", size=64, seed=1)
    for index in range(40):
        sample = draw_sample(config, "image", index)
        image, mask, keypoints = sample.frames[0], sample.masks[0], sample.keypoints[0]
        figure, background = parse_caption(sample.caption, list(PALETTE))
        assert (figure, background) == (sample.figure, sample.background) and figure != background
        assert (figure, background) in config.train_pairs
        assert (image[mask] == PALETTE[figure]).all() and (image[~mask] == PALETTE[background]).all()
        assert np.array_equal(silhouette(keypoints, 64, 64, config.style), mask)
        assert (keypoints[..., 2] == 1.0).all()
        xy = np.round(keypoints[0, :, :2]).astype(int)
        assert mask[xy[:, 1], xy[:, 0]].all(), "every keypoint lies on the drawn figure"
        assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()), "figure inside the frame"
        assert poses.within_limits(_params_of(keypoints[0]), tolerance=0.05)
        assert 0.2 < mask.sum() / mask.size < 0.5 or mask.sum() > 30


def _params_of(person: np.ndarray) -> np.ndarray:
    angles = poses.joint_angles(person)
    return np.array([angles.get(name, (low + high) / 2) for name, low, high in poses.PARAMETERS])


def test_motions_are_smooth_and_stay_within_limits():
    config = ToyWorldConfig(output="unused", size=64, seed=2)
    bound = config.max_step * config.size
    moved = 0
    for index in range(12):
        sample = draw_sample(config, "clip", index)
        points = sample.keypoints[:, 0, :, :2]
        assert poses.max_displacement(points) <= bound + 0.01
        moved += poses.max_displacement(points) > 0.5
        for person in sample.keypoints[:, 0]:
            assert poses.within_limits(_params_of(person), tolerance=0.05)
        for frame, mask in zip(sample.frames, sample.masks):
            assert (frame[mask] == PALETTE[sample.figure]).all() and (frame[~mask] == PALETTE[sample.background]).all()
    assert moved >= 10, "figures move"
    steady = poses.sample_motion(
        np.random.default_rng(0), 16, size=64, height_fraction=0.7, interval=4, step=1.0, max_step_px=0.3
    )
    assert poses.max_displacement(steady.points) <= 0.3 and steady.step < 1.0


def test_drawing_is_deterministic_and_evaluation_streams_are_their_own():
    config = ToyWorldConfig(output="unused", seed=5)
    a, b = draw_sample(config, "clip", 7), draw_sample(config, "clip", 7)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.keypoints, b.keypoints) and a.caption == b.caption
    short = draw_sample(config, "short", 7)
    assert not np.allclose(short.keypoints[0], a.keypoints[0])
    assert (short.figure, short.background) in config.held_out_pairs and short.held_out_pair


def test_colour_pairs_held_out_without_starving_any_colour():
    names = list(PALETTE)
    held = held_out_pairs(names, len(names), seed=0)
    assert len(held) == len(names) and len(set(held)) == len(held)
    assert sorted(f for f, _ in held) == sorted(names) and sorted(b for _, b in held) == sorted(names)
    train = training_pairs(names, held)
    assert not set(held) & set(train) and len(train) == len(names) * (len(names) - 1) - len(names)
    assert {f for f, _ in train} == set(names) == {b for _, b in train}
    assert parse_caption(make_caption("cyan", "white"), names) == ("cyan", "white")
    with pytest.raises(ValueError):
        parse_caption("a purple figure on a white background", names)


def test_image_shards_read_back_with_the_laion_pose_reader(world):
    config, out = world
    samples = list(laion_pose.iter_samples(out / "images"))
    assert [s.key for s in samples] == [draw_sample(config, "image", i).key for i in range(config.images)]
    index = laion_pose.read_index(out / "images")
    assert index.num_rows == config.images and set(index.column("status").to_pylist()) == {laion_pose.KEPT}
    totals = json.loads((out / "images" / "stats.json").read_text())
    assert totals["counts"][laion_pose.KEPT] == config.images and totals["shards"] == 3
    for i, sample in enumerate(samples[:8]):
        drawn = draw_sample(config, "image", i)
        assert sample.caption == drawn.caption and np.array_equal(sample.keypoints, drawn.keypoints[0])
        mask = silhouette(sample.keypoints, config.size, config.size, config.style)
        assert np.array_equal(mask, drawn.masks[0])
        error = np.abs(sample.image.astype(int) - drawn.frames[0].astype(int)).max(axis=-1)
        inner = _away_from_edges(mask)
        assert error[inner].max() <= 24 and error.mean() < 4, "JPEG 4:4:4 keeps colours far inside the mask tolerance"
        assert sample.annotation["toy"]["figure"] == drawn.figure
    raw = next(iter(wds.WebDataset(str(out / "images" / "00000.tar"), shardshuffle=False)))
    skeleton = np.asarray(Image.open(io.BytesIO(raw[laion_pose.SKELETON_EXT])).convert("RGB"))
    assert np.array_equal(skeleton, render_skeleton(samples[0].keypoints, config.size, config.size))


def _away_from_edges(mask: np.ndarray) -> np.ndarray:
    import cv2

    kernel = np.ones((5, 5), np.uint8)
    grown = cv2.dilate(mask.astype(np.uint8), kernel)
    shrunk = cv2.erode(mask.astype(np.uint8), kernel)
    return (grown == 0) | (shrunk == 1)


@pytest.mark.parametrize("decoder", ["pyav", "decord"])
def test_clip_shards_read_back_with_the_clip_reader(world, decoder):
    config, out = world
    reader_config = clip_reader.ClipDatasetConfig(root=str(out / "clips"), num_frames=8, frame_stride=4, resolution=config.size,
                                            start="first", decoder=decoder)  # fmt: skip
    items = list(clip_reader.ClipDataset(reader_config))
    assert len(items) == config.clips
    for i, item in enumerate(items):
        drawn = draw_sample(config, "clip", i)
        assert item["caption"] == drawn.caption and item["key"] == f"{drawn.key}_0"
        frames = ((item["pixel_values"].permute(0, 2, 3, 1).numpy() + 1) * 127.5).round()
        expected = drawn.frames[item["frame_indices"].numpy()].astype(np.float64)
        masks = drawn.masks[item["frame_indices"].numpy()]
        assert np.abs(frames - expected).mean() < 12, "H.264 4:2:0 blurs colour only at the figure's edges"
        assert np.abs(frames - expected).max(axis=-1)[np.stack([_away_from_edges(m) for m in masks])].max() <= 40
        palette = config.palette
        iou = video_pose_iou(frames.astype(np.uint8), masks, palette[drawn.background], config.mask_tolerance)
        assert iou.min() > 0.75
    table = clips.read_index(out / "clips")
    assert table.column("frames").to_pylist() == [config.clip_frames] * config.clips
    raw = next(iter(wds.WebDataset(str(out / "clips" / "00000.tar"), shardshuffle=False)))
    annotation = json.loads(raw[clips.ANNOTATION_EXT])
    clips.check_annotation(annotation)
    assert np.array_equal(np.asarray(annotation["toy"]["keypoints"], np.float32), draw_sample(config, "clip", 0).keypoints)


def test_held_out_set_is_readable_by_generation_and_evaluation(world):
    from evaluation.sample import load_sample, scan_videos
    from evaluation.toy_metrics import shuffled_control
    from datasets.pose_sequence import read_pose_sequence
    from follow_your_pose.pose_sources import read_pose_input

    config, out = world
    spec = read_spec(out / "eval")
    assert [e["set"] for e in spec["entries"]] == ["short"] * 3 + ["long"]
    assert all(tuple(p) not in config.train_pairs for p in spec["held_out_pairs"])
    silhouettes_of, ious = [], []
    for entry in spec["entries"]:
        assert entry["held_out_pair"] and (entry["figure"], entry["background"]) in config.held_out_pairs
        sequence = read_pose_sequence(out / "eval" / entry["pose"])
        pose_input = read_pose_input(out / "eval" / entry["pose"])
        assert len(sequence.keypoints) == entry["frames"] == len(pose_input) and pose_input.size == (config.size, config.size)
        sample = load_sample(out / "eval" / entry["oracle"])
        assert sample.prompt == entry["prompt"] and len(sample.frames) == entry["frames"]
        masks = np.stack([silhouette(k, config.size, config.size, config.style) for k in sample.keypoints])
        ious.append(video_pose_iou(sample.frames, masks, entry["background_rgb"], spec["mask_tolerance"]).mean())
        silhouettes_of.append(masks[:8])
    assert len(scan_videos(out / "eval" / "oracle")) == 4
    assert min(ious) > 0.8, f"the oracle through H.264 4:2:0 scores near 1: {ious}"
    control = shuffled_control(silhouettes_of, seed=0)
    shuffled = [
        video_pose_iou(load_sample(out / "eval" / e["oracle"]).frames[:8], c, e["background_rgb"], spec["mask_tolerance"]).mean()
        for e, c in zip(spec["entries"], control)
    ]
    assert np.mean(shuffled) < 0.5 * np.mean(ious)


def test_rerun_resumes_and_refuses_other_settings(world, tmp_path, caplog):
    config, out = world
    copy = tmp_path / "world"
    shutil.copytree(out, copy)
    (copy / "images" / "00001.stats.json").unlink()
    (copy / "images" / ".00001.tar.tmp-1-deadbeef").write_bytes(b"half")
    before = laion_pose.read_index(copy / "images").num_rows
    argv = ["--output", str(copy), "--seed", "3"] + [f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]
    assert main(argv) == 0
    assert before == config.images - 10 and laion_pose.read_index(copy / "images").num_rows == config.images
    assert not list((copy / "images").glob(".*tmp-*"))
    rebuilt = laion_pose.read_index(copy / "images").column("sha256").to_pylist()
    assert rebuilt == laion_pose.read_index(out / "images").column("sha256").to_pylist(), "same seed, same bytes"
    assert main(argv + ["--seed=4"]) == 2
    assert "built with other settings" in caplog.text and "seed" in caplog.text


@pytest.mark.slow
def test_parallel_workers_write_the_same_shards(tmp_path):
    common = ["--size=32", "--images=12", "--images-per-shard=4", "--clips=0", "--eval-videos=0", "--eval-long-videos=0"]
    assert main(["--output", str(tmp_path / "one")] + common) == 0
    assert main(["--output", str(tmp_path / "two"), "--workers=2"] + common) == 0
    one, two = (laion_pose.read_index(tmp_path / name).column("sha256").to_pylist() for name in ("one/images", "two/images"))
    assert one == two and len(one) == 12
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert config["workers"] == 2 and config["generator"] == "toy_world"


def test_bad_settings_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown colour"):
        ToyWorldConfig(output="x", colours=("red", "purple"))
    with pytest.raises(ValueError, match="even"):
        ToyWorldConfig(output="x", size=33)
    with pytest.raises(ValueError, match="nothing is left"):
        ToyWorldConfig(output="x", colours=("red", "blue"), held_out=2)
    with pytest.raises(SystemExit):
        main(["--output", str(tmp_path), "--caption-template", "a figure"])
