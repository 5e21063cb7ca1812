"""Training's data and its command-line checks, on tiny real-format shards: augmentation, determinism, the
resumable sampler, the clip reader by random access, and bad configs failing before anything trains."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from training.config import ConfigError
from training.presets import preset
from tests.test_training import (  # noqa: F401  (fixtures: one torch thread, the tiny SD, the toy world's shards)
    clip_data, one_thread, pose_data, stage1_args, stage2_args, tiny_base, toy_world,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def figures(tmp_path_factory) -> Path:
    """Light figures on dark backgrounds (:mod:`training.synthetic`), so the figure's pixels are easy to find."""
    from training.synthetic import write_laion_pose

    return write_laion_pose(tmp_path_factory.mktemp("figures") / "laion-pose", 12, size=80, per_shard=5, seed=3)



# --- configuration and command line ----------------------------------------------------------------


def test_bad_configs_fail_before_training(tmp_path, tiny_base, pose_data, clip_data, capsys):
    from training import stage1, stage2

    cases = [
        (stage1.main, stage1_args(tiny_base, tmp_path / "nowhere", tmp_path / "a"), "LAION-Pose folder"),
        (stage1.main, stage1_args(tiny_base, tmp_path, tmp_path / "b"), "no complete LAION-Pose shards"),
        (stage1.main, stage1_args(tiny_base, pose_data, tmp_path / "c", "--data.resolution", "72"), "not a multiple of 64"),
        (stage1.main, ["--preset", "huge", "--data", str(pose_data), "--output", str(tmp_path / "d")], "unknown preset"),
        (stage1.main, stage1_args(tiny_base, pose_data, tmp_path / "e", "--device", "cpu", "--mixed-precision", "fp16"), "fp16 needs a CUDA"),
        (stage2.main, stage2_args(None, clip_data, tmp_path / "f"), "--init STAGE1_OUTPUT_DIR"),
        (stage1.main, stage1_args(tiny_base, pose_data, tmp_path / "i", "--log.report-to", "wandb", "--device", "cuda"), "no CUDA device")
        if not torch.cuda.is_available() else (stage1.main, ["--preset", "x"], "unknown preset"),
        (stage2.main, stage2_args(tmp_path, clip_data, tmp_path / "g"), "no exported stage-1 model"),
        (stage2.main, stage2_args(tmp_path, tmp_path / "nowhere", tmp_path / "h"), "clip folder"),
    ]
    for main, argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2, argv
        assert message in capsys.readouterr().err, (argv, message)
    assert not list(tmp_path.glob("*/checkpoints")) and not list(tmp_path.glob("*/metrics.jsonl"))


# --- data -------------------------------------------------------------------------------------------


def test_crop_moves_keypoints_with_the_image_and_skeleton_is_redrawn(figures):
    """The skeleton drawn after the crop lies on the figure in the cropped image; drawn from the
    un-moved keypoints it would not. A flip mirrors the image and swaps left and right limbs."""
    from pose_extraction.skeleton import render_skeleton
    from training.data import PoseImageDataset, sample_rng, transform_sample

    config = replace(preset(1, "tiny").data, crop_scale=(0.35, 0.6), crop_ratio=(0.75, 1.33), random_flip=True)
    plain_config = replace(config, random_flip=False)
    dataset = PoseImageDataset(figures, config, seed=0)
    on_body, control, flips = [], [], 0
    for index in range(len(dataset)):
        sample = dataset.load(index)
        out = transform_sample(sample.image, sample.keypoints, sample.caption, config, sample_rng(0, 0, index))
        plain = transform_sample(sample.image, sample.keypoints, sample.caption, plain_config, sample_rng(0, 0, index))
        image = (out["pixel_values"].permute(1, 2, 0).numpy() + 1) * 127.5
        body = image.mean(axis=2) > 150  # the figure is drawn in a light skin colour on a dark background
        drawn = out["pose"].sum(dim=0).numpy() > 0
        stale = render_skeleton(sample.keypoints, config.resolution, config.resolution).sum(axis=2) > 0
        if drawn.sum() > 20:
            on_body.append((body & drawn).sum() / drawn.sum())
            control.append((body & stale).sum() / max(stale.sum(), 1))
        if not torch.equal(out["pixel_values"], plain["pixel_values"]):
            flips += 1
            assert torch.equal(out["pixel_values"], plain["pixel_values"].flip(-1))
            mirrored = plain["pose"].flip(-1)
            assert ((out["pose"].sum(0) > 0) == (mirrored.sum(0) > 0)).float().mean() > 0.97
            green = torch.tensor([0.0, 1.0, 0.0])[:, None, None]
            was_green = (mirrored - green).abs().sum(0) < 0.05
            if was_green.sum() > 5:  # the person's left limbs are now their right ones: no longer green
                assert ((out["pose"] - green).abs().sum(0) < 0.05)[was_green].float().mean() < 0.3
    assert len(on_body) >= 6
    assert np.mean(on_body) > 0.85 and np.mean(on_body) > np.mean(control) + 0.3, (on_body, control)
    assert 0 < flips < len(dataset)  # random flips happened, not always


def test_samples_are_deterministic_per_seed_epoch_and_index(pose_data):
    from training.data import PoseImageDataset

    config = replace(preset(1, "tiny").data, caption_dropout=0.5)
    dataset = PoseImageDataset(pose_data, config, seed=5)
    first, again, other_epoch = dataset[(0, 3)], dataset[(0, 3)], dataset[(1, 3)]
    assert torch.equal(first["pixel_values"], again["pixel_values"]) and torch.equal(first["pose"], again["pose"])
    assert not torch.equal(first["pixel_values"], other_epoch["pixel_values"])
    assert first["pixel_values"].shape == (3, 64, 64) and -1 <= first["pixel_values"].min() < first["pixel_values"].max() <= 1
    dropped = [dataset[(0, i)]["caption"] == "" for i in range(len(dataset))]
    assert 0 < sum(dropped) < len(dropped)


def test_batch_sampler_splits_epochs_and_resumes_mid_epoch():
    from training.data import ResumableBatchSampler

    sampler = ResumableBatchSampler(23, 3, seed=1, shuffle=True)
    epoch0 = list(sampler)
    assert len(epoch0) == 7 and len({i for batch in epoch0 for _, i in batch}) == 21
    sampler.set_position(0, 4)
    assert list(sampler) == epoch0[4:]
    sampler.set_position(1, 0)
    assert [i for _, i in list(sampler)[0]] != [i for _, i in epoch0[0]]
    ranks = [ResumableBatchSampler(23, 3, seed=1, shuffle=True, rank=r, world=2) for r in range(2)]
    seen = [{i for batch in r for _, i in batch} for r in ranks]
    assert not seen[0] & seen[1] and len(seen[0]) == len(seen[1]) == 9
    with pytest.raises(ConfigError, match="fewer than one batch"):
        ResumableBatchSampler(5, 4, seed=0, shuffle=True, world=2)


def test_loader_workers_give_the_same_batches_as_the_main_process(pose_data, clip_data):
    from training.data import PoseImageDataset, ResumableBatchSampler, clip_dataset

    for dataset in (
        PoseImageDataset(pose_data, preset(1, "tiny").data, seed=0),
        clip_dataset(clip_data, replace(preset(2, "tiny").data, num_frames=3, frame_stride=2), seed=0),
    ):
        batches = []
        for workers in (0, 2):
            sampler = ResumableBatchSampler(len(dataset), 2, seed=0, shuffle=True)
            loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers)
            batches.append([batch["pixel_values"] for batch in loader])
        assert len(batches[0]) == len(batches[1]) >= 2
        assert all(torch.equal(a, b) for a, b in zip(*batches))
    assert batches[0][0].shape == (2, 3, 3, 64, 64)  # clips: (batch, frames, channels, H, W)


def test_clip_dataset_reads_strided_frames_and_skips_short_clips(clip_data):
    from datasets.clip_reader import ClipDataset, ClipDatasetConfig
    from training.data import clip_dataset

    config = replace(preset(2, "tiny").data, num_frames=8, frame_stride=1)  # spans all 8 frames of every clip
    ours = clip_dataset(clip_data, config, seed=0)
    assert len(ours) == 4 and ours.too_short == 0
    theirs = next(iter(ClipDataset(ClipDatasetConfig(root=str(clip_data), num_frames=8, frame_stride=1, resolution=64, start="first"))))
    mine = ours[(0, [ours.key(i) for i in range(len(ours))].index(theirs["key"]))]
    assert torch.equal(mine["pixel_values"], theirs["pixel_values"])  # one span: the only start is frame 0
    with pytest.raises(ConfigError, match="no clip .* has the 9 frames"):
        clip_dataset(clip_data, replace(config, num_frames=5, frame_stride=2), seed=0)

