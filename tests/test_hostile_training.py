"""Hostile and careless inputs to training (python -m training.stage1 / stage2): damaged checkpoints, damaged
shards, unusable or busy output folders. Shards come from the real toy-world builder and are then damaged the
way a disk or a crawl does it; the stages run for real on a tiny random SD model."""

from __future__ import annotations

import io
import json
import logging
import shutil
import socket
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets.damage import DAMAGED_KEY, MIN_DAMAGED
from datasets.output_folder import LOCK_NAME
from training import checkpoint as ckpt
from tests.hostile import assert_refused, lock_held_elsewhere, run_entry, unwritable_folder
from tests.test_training import one_thread, stage1_args, tiny_base  # noqa: F401  (fixtures: one torch thread, the tiny SD)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(make_toy_world) -> Path:
    """Three shards of four images (and clips): one shard can be damaged in several ways, another cut short."""
    return make_toy_world(images=12, images_per_shard=4, clips=4, clips_per_shard=2)


def copy_of(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def rewrite_member(tar: Path, name: str, change) -> None:
    """Rebuild ``tar`` with member ``name``'s bytes replaced by ``change(bytes)`` (a damaged record, in a sound tar)."""
    with tarfile.open(tar) as source:
        members = [(info, source.extractfile(info).read()) for info in source if info.isfile()]
    with tarfile.open(tar, "w") as target:
        for info, data in members:
            data = change(data) if info.name == name else data
            info.size = len(data)
            target.addfile(info, io.BytesIO(data))


def member_names(tar: Path, suffix: str) -> list[str]:
    with tarfile.open(tar) as archive:
        return [info.name for info in archive if info.name.endswith(f".{suffix}")]


def cut_inside_last_member(tar: Path) -> None:
    """Truncate ``tar`` halfway through its last member's data, as a full disk or a killed copy leaves it."""
    with tarfile.open(tar) as archive:
        last = [info for info in archive if info.isfile()][-1]
    with open(tar, "r+b") as handle:
        handle.truncate(last.offset_data + last.size // 2)


def nan_keypoints(data: bytes) -> bytes:
    annotation = json.loads(data)
    annotation["persons"][0]["keypoints"][5][0] = float("nan")
    return json.dumps(annotation).encode()


def far_keypoints(data: bytes) -> bytes:
    annotation = json.loads(data)
    annotation["persons"][0]["keypoints"][6][1] = 1e12
    return json.dumps(annotation).encode()


@pytest.fixture()
def damaged_images(world, tmp_path) -> tuple[Path, list[str]]:
    """Three shards of four: one truncated, one with a non-image jpg, NaN keypoints and keypoints at 1e12 px."""
    data = copy_of(world / "images", tmp_path)
    tars = sorted(data.glob("*.tar"))
    jpg, json_a, json_b = member_names(tars[1], "jpg")[0], *member_names(tars[1], "json")[1:3]
    rewrite_member(tars[1], jpg, lambda _: b"<html>not an image</html>")
    rewrite_member(tars[1], json_a, nan_keypoints)
    rewrite_member(tars[1], json_b, far_keypoints)
    cut_inside_last_member(tars[0])
    bad = [name.split(".", 1)[0] for name in (jpg, json_a, json_b)]
    return data, bad


def test_damaged_image_shards_are_skipped_named_and_counted(damaged_images, caplog):
    from training.presets import preset
    from training.data import PoseImageDataset

    data, bad = damaged_images
    with caplog.at_level(logging.WARNING):
        dataset = PoseImageDataset(data, preset(1, "tiny").data, seed=0)
    assert "shard" in caplog.text and "00000.tar is damaged (cut short at byte" in caplog.text
    assert dataset.lost_samples >= 1 and dataset.expected_samples == 12
    keys = [dataset.key(i) for i in range(len(dataset))]
    reports = []
    for index, key in enumerate(keys):
        item = dataset[(0, index)]
        assert item["pixel_values"].shape == (3, 64, 64) and torch.isfinite(item["pose"]).all()
        if key in bad:
            assert item["key"] != key and key in item[DAMAGED_KEY] and "shard 00001.tar" in item[DAMAGED_KEY]
            reports.append(item[DAMAGED_KEY])
    assert len(reports) == 3
    assert any("not finite" in r for r in reports) and any("1e+12 px" in r for r in reports)
    assert any("cannot identify image" in r or "UnidentifiedImageError" in r for r in reports)
    assert dataset.load(keys.index(bad[0])).key != bad[0]  # validation poses come from readable samples too


def test_stage1_trains_through_damaged_shards_and_counts_them(damaged_images, tiny_base, tmp_path, caplog):
    from training import stage1

    data, bad = damaged_images
    with caplog.at_level(logging.WARNING):
        result = stage1.main(stage1_args(tiny_base, data, tmp_path / "run", "--max-steps", "5", "--data.num-workers", "2"))
    assert result.global_step == 5 and all(np.isfinite(v) for v in result.losses.values())
    named = [line for line in caplog.messages if line.startswith("skipped a damaged sample")]
    assert named and all("shard 00001.tar, sample" in line for line in named)
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_too_much_damage_stops_the_run_with_one_line(world, tiny_base, tmp_path):
    data = copy_of(world / "images", tmp_path)
    for tar in sorted(data.glob("*.tar")):
        for name in member_names(tar, "jpg")[:3]:  # 9 of 12, more than the limit of MIN_DAMAGED
            rewrite_member(tar, name, lambda _: b"\0" * 100)
    assert 9 > MIN_DAMAGED
    done = run_entry("-m", "training.stage1", *stage1_args(tiny_base, data, tmp_path / "run", "--max-steps", "20",
                                                            "--data.num-workers", "2"), timeout=600)  # fmt: skip
    assert_refused(done, f"samples are damaged (while training), more than the limit of {MIN_DAMAGED}")
    tolerant = run_entry("-m", "training.stage1", *stage1_args(tiny_base, data, tmp_path / "tolerant", "--max-steps", "3",
                                                                "--data.damage.minimum", "9"), timeout=600)  # fmt: skip
    assert tolerant.returncode == 0, tolerant.stderr[-3000:]  # the stage's data config carries the policy
    for tar in sorted(data.glob("*.tar")):
        for name in member_names(tar, "jpg"):
            rewrite_member(tar, name, lambda _: b"\0" * 100)
    done = run_entry("-m", "training.stage1", *stage1_args(tiny_base, data, tmp_path / "run1", "--data.num-workers", "2"))
    assert_refused(done, "data: 12 samples in a row are damaged, from shard")
    empty = copy_of(world / "images", tmp_path / "empty")
    for tar in empty.glob("*.tar"):
        tar.write_bytes(b"")  # 0-byte tars: nothing readable at all
    done = run_entry("-m", "training.stage1", *stage1_args(tiny_base, empty, tmp_path / "run2"), timeout=600)
    assert_refused(done, "no readable sample in", "00000.tar: not a readable tar")


def test_damaged_clips_are_skipped_in_stage2(world, tmp_path):
    from dataclasses import replace

    from training.presets import preset
    from training.data import clip_dataset

    data = copy_of(world / "clips", tmp_path)
    tar = sorted(data.glob("*.tar"))[0]
    mp4 = member_names(tar, "mp4")[0]
    rewrite_member(tar, mp4, lambda video: video[: len(video) // 3])  # a cut-short video
    dataset = clip_dataset(data, replace(preset(2, "tiny").data, num_frames=4, frame_stride=2), seed=0)
    index = [dataset.key(i) for i in range(len(dataset))].index(mp4.split(".", 1)[0])
    item = dataset[(0, index)]
    assert item["key"] != mp4.split(".", 1)[0] and f"shard {tar.name}, sample {mp4.split('.', 1)[0]}" in item[DAMAGED_KEY]


# --- resume from damaged checkpoints ------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(world, tiny_base, tmp_path_factory) -> Path:
    """A stage-1 run with checkpoints at steps 1, 2 and 3."""
    from training import stage1

    output = tmp_path_factory.mktemp("trained") / "run"
    stage1.main(stage1_args(tiny_base, world / "images", output, "--max-steps", "3", "--checkpoint.every", "1"))
    return output


DAMAGE = {
    "optimizer.pt truncated": (ckpt.OPTIMIZER, lambda p: p.write_bytes(p.read_bytes()[:100])),
    "weights truncated": (ckpt.WEIGHTS, lambda p: p.write_bytes(p.read_bytes()[:-10])),
    "scheduler.pt deleted": (ckpt.SCHEDULER, Path.unlink),
    "rng deleted": ("rng/rank-0.pt", Path.unlink),
    "state.json garbage": (ckpt.STATE, lambda p: p.write_text("{\"global_step\": ")),
    "config.json garbage": (ckpt.CONFIG, lambda p: p.write_text("[1, 2]")),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_every_kind_of_checkpoint_damage_is_found_and_named(trained, tmp_path, kind):
    run = copy_of(trained, tmp_path)
    name, damage = DAMAGE[kind]
    damage(run / "checkpoints" / "step-00000003" / name)
    with pytest.raises(ckpt.DamagedCheckpointError, match=f"step-00000003/{name} is (damaged|missing)"):
        ckpt.read_checkpoint(run / "checkpoints" / "step-00000003", process_index=0)
    assert ckpt.resolve_resume(run, "latest").path.name == "step-00000002"


def test_resume_latest_falls_back_to_the_newest_intact_checkpoint(trained, world, tiny_base, tmp_path, caplog):
    from training import stage1

    run = copy_of(trained, tmp_path)
    damage = DAMAGE["optimizer.pt truncated"][1]
    damage(run / "checkpoints" / "step-00000003" / ckpt.OPTIMIZER)
    with caplog.at_level(logging.WARNING):
        result = stage1.main(stage1_args(tiny_base, world / "images", run, "--max-steps", "4", "--resume", "latest"))
    assert "step-00000003/optimizer.pt is damaged" in caplog.text and "resuming from step-00000002" in caplog.text
    assert result.global_step == 4 and set(result.losses) == {3, 4}
    assert (run / "checkpoints" / "damaged-step-00000003").is_dir()  # set aside, for a look
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step-00000002", "step-00000004"]
    damage(run / "checkpoints" / "step-00000004" / ckpt.OPTIMIZER)
    (run / "checkpoints" / "step-00000002" / ckpt.STATE).unlink()
    done = run_entry("-m", "training.stage1", *stage1_args(tiny_base, world / "images", run, "--resume", "latest"))
    line = assert_refused(done, "--resume latest: no intact checkpoint in")
    assert "step-00000004/optimizer.pt is damaged" in line and "step-00000002/state.json is missing" in line


# --- refusals before any work -------------------------------------------------------------------------


def test_unusable_or_busy_output_is_refused_before_any_model_loads(world, tiny_base, tmp_path, capsys):
    from training import stage1, stage2

    afile = tmp_path / "a-file"
    afile.write_text("x")
    busy = tmp_path / "busy"
    busy.mkdir()
    read_only = unwritable_folder(tmp_path)
    with lock_held_elsewhere(busy) as pid:
        for main, argv, message in [
            (stage1.main, stage1_args(tiny_base, world / "images", afile), f"--output {afile} is a file, not a folder"),
            (stage2.main, ["--preset", "tiny", "--data", str(world / "clips"), "--output", str(read_only)], "is not writable"),
            (stage1.main, stage1_args(tiny_base, world / "images", busy), f"PID {pid} on host {socket.gethostname()}"),
        ]:
            with pytest.raises(SystemExit) as exit_info:
                main(argv)
            err = capsys.readouterr().err
            assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (busy / "checkpoints").exists()
    assert_refused(run_entry("-m", "training.stage2", "--preset", "tiny", "--output", str(afile)), "is a file, not a folder")
