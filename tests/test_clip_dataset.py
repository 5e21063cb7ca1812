"""The clip reader on real clip shards written by the builder's shard code (no Ray): frames, starts, short clips,
workers, streaming and random access agreeing, damaged clips."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

import torch

from datasets.clip_reader import ClipDataset, ClipDatasetConfig
from pipelines.hdvila.config import CutConfig, SourceConfig
from pipelines.hdvila.metadata import VideoIndex, iter_videos  # noqa: E402
from pipelines.hdvila.planning import ClipPlanner  # noqa: E402
from pipelines.hdvila.shard import build_shard  # noqa: E402
from pipelines.hdvila.stages import ClipCutter  # noqa: E402
from tests.test_hdvila_cutting import make_counter_video, read_counter  # noqa: E402

# clip key -> (first source frame, stored frames) at the source's 25 fps
CLIPS = {"v0_0": (0, 20), "v0_1": (25, 30), "v1_0": (10, 12), "v1_1": (40, 26), "v2_0": (5, 40), "v3_0": (0, 8)}


@pytest.fixture(scope="module")
def clip_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("clipdata")
    (root / "videos").mkdir()
    by_video: dict[str, list] = {}
    for key, (first, count) in CLIPS.items():
        by_video.setdefault(key.rsplit("_", 1)[0], []).append((first / 25, (first + count) / 25))
    lines = []
    for video_id, spans in by_video.items():
        make_counter_video(root / "videos" / f"{video_id}.mp4", 80)
        clips = [{"clip_id": f"{video_id}.{i}", "span": [f"00:00:{a:06.3f}", f"00:00:{b:06.3f}"]} for i, (a, b) in enumerate(spans)]
        lines.append(json.dumps({"video_id": video_id, "url": "", "clip": clips}))
    (root / "meta.jsonl").write_text("\n".join(lines) + "\n")
    source = SourceConfig(metadata=str(root / "meta.jsonl"), videos=str(root / "videos"), clips_per_shard=2)
    cutter = ClipCutter(CutConfig(size=64), source)
    planner = ClipPlanner(source, VideoIndex.scan(source.videos), {f"v{i}.0": f"caption {i}" for i in range(4)})
    for plan in planner.plan(iter_videos(source.metadata)):
        stats = build_shard(plan, root / "clips", cutter)
        assert stats["counts"]["kept"] == len(plan.rows)
    return root / "clips"


def _counters(pixel_values: torch.Tensor) -> list[int]:
    frames = ((pixel_values.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    return [read_counter(frame) for frame in frames]


def test_fixed_start_gives_the_right_frames_at_the_stride(clip_root):
    dataset = ClipDataset(ClipDatasetConfig(root=str(clip_root), num_frames=4, frame_stride=3, resolution=64, start="first"))
    samples = {s["key"]: s for s in dataset}
    assert set(samples) == {k for k, (_, n) in CLIPS.items() if n >= 10} and dataset.skipped == 1
    for key, sample in samples.items():
        values = sample["pixel_values"]
        assert values.shape == (4, 3, 64, 64) and values.dtype == torch.float32
        assert values.min() >= -1.0 and values.max() <= 1.0 and values.min() < -0.9 and values.max() > 0.9
        first = CLIPS[key][0]
        assert sample["frame_indices"].tolist() == [0, 3, 6, 9]
        assert _counters(values) == [first, first + 3, first + 6, first + 9]
    assert samples["v2_0"]["caption"] == "caption 2" and samples["v0_1"]["caption"] == ""


def test_resize_center_start_and_pyav_decoder_agree(clip_root):
    common = dict(root=str(clip_root), num_frames=3, frame_stride=2, resolution=48, start="center")
    by_decoder = {
        decoder: {s["key"]: s for s in ClipDataset(ClipDatasetConfig(**common, decoder=decoder))} for decoder in ("decord", "pyav")
    }
    assert set(by_decoder["decord"]) == set(by_decoder["pyav"])
    for key, sample in by_decoder["decord"].items():
        first, count = CLIPS[key]
        start = (count - 5) // 2
        assert sample["pixel_values"].shape == (3, 3, 48, 48)
        assert sample["frame_indices"].tolist() == [start, start + 2, start + 4]
        assert _counters(sample["pixel_values"]) == [first + start, first + start + 2, first + start + 4]
        assert torch.allclose(sample["pixel_values"], by_decoder["pyav"][key]["pixel_values"], atol=2 / 127.5)


def test_random_starts_are_seeded_per_epoch(clip_root):
    def starts(seed, epoch):
        dataset = ClipDataset(ClipDatasetConfig(root=str(clip_root), num_frames=2, frame_stride=1, resolution=32, seed=seed))
        dataset.set_epoch(epoch)
        return {s["key"]: int(s["frame_indices"][0]) for s in dataset}

    first = starts(0, 0)
    assert first == starts(0, 0) and first != starts(0, 1) and first != starts(1, 0)
    assert all(0 <= start <= CLIPS[key][1] - 2 for key, start in first.items()) and len(set(first.values())) > 1


def test_short_clips_are_counted_or_an_error(clip_root):
    config = dict(root=str(clip_root), num_frames=8, frame_stride=3, resolution=32)  # needs 22 frames
    dataset = ClipDataset(ClipDatasetConfig(**config))
    assert dataset.summary() == {"clips": 6, "usable": 3, "too_short": 3}
    assert sorted(s["key"] for s in dataset) == ["v0_1", "v1_1", "v2_0"] and dataset.skipped == 3
    with pytest.raises(ValueError, match=r"clip v0_0 has 20 frames; a sample needs 22"):
        list(ClipDataset(ClipDatasetConfig(**config, short_clips="error")))
    with pytest.raises(FileNotFoundError):
        ClipDataset(ClipDatasetConfig(root=str(clip_root / "nothing")))


def test_dataloader_with_two_workers_reads_every_clip_once(clip_root):
    dataset = ClipDataset(
        ClipDatasetConfig(root=str(clip_root), num_frames=2, frame_stride=4, resolution=32, shuffle_shards=True, shuffle_buffer=2)
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2)
    keys, shapes = [], set()
    for batch in loader:
        keys += batch["key"]
        shapes.add(tuple(batch["pixel_values"].shape[1:]))
        assert len(batch["caption"]) == len(batch["key"])
    assert sorted(keys) == sorted(CLIPS) and len(keys) == len(set(keys))
    assert shapes == {(2, 3, 32, 32)}
    dataset.set_epoch(1)
    assert sorted(k for batch in torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2) for k in batch["key"]) == sorted(CLIPS)


def test_config_validation():
    with pytest.raises(ValueError):
        ClipDatasetConfig(root="x", num_frames=0)
    with pytest.raises(ValueError):
        ClipDatasetConfig(root="x", start="middle")
    assert ClipDatasetConfig(root="x", num_frames=8, frame_stride=4).span == 29
    assert np.isclose(ClipDatasetConfig(root="x").resolution, 512)


def test_random_access_reads_the_samples_the_stream_reads(clip_root):
    from datasets.clip_reader import IndexedClipDataset

    config = ClipDatasetConfig(root=str(clip_root), num_frames=4, frame_stride=3, resolution=64, start="first")
    streamed = {s["key"]: s for s in ClipDataset(config)}
    indexed = IndexedClipDataset(config)
    assert len(indexed) == len(streamed) == 5 and indexed.too_short == 1
    for index in range(len(indexed)):
        sample = indexed[(0, index)]
        twin = streamed[sample["key"]]
        assert torch.equal(sample["pixel_values"], twin["pixel_values"]) and sample["caption"] == twin["caption"]
        assert sample["frame_indices"].tolist() == twin["frame_indices"].tolist() and sample["damaged"] == ""
    random = IndexedClipDataset(ClipDatasetConfig(root=str(clip_root), num_frames=2, frame_stride=1, resolution=32, seed=3))
    starts = [[int(random[(epoch, i)]["frame_indices"][0]) for i in range(len(random))] for epoch in (0, 0, 1)]
    assert starts[0] == starts[1] != starts[2]
    with pytest.raises(ValueError, match=r"clip v3_0 has 8 frames; a sample needs 10"):
        IndexedClipDataset(ClipDatasetConfig(root=str(clip_root), num_frames=4, frame_stride=3, short_clips="error"))


def test_random_access_replaces_a_damaged_clip_and_its_policy_sets_the_limit(clip_root, tmp_path):
    import shutil
    import tarfile

    from datasets.clip_reader import IndexedClipDataset
    from datasets.damage import DAMAGED_KEY, DamagedDataError, DamagePolicy, DamageTally

    root = Path(shutil.copytree(clip_root, tmp_path / "clips"))
    tar = sorted(root.glob("*.tar"))[0]
    with tarfile.open(tar) as archive:
        members = [(info, archive.extractfile(info).read()) for info in archive if info.isfile()]
    video = next(info.name for info, _ in members if info.name.endswith(".mp4"))
    with tarfile.open(tar, "w") as archive:  # one clip's video replaced by bytes that are no video, in a sound tar
        for info, data in members:
            data = b"\0" * 100 if info.name == video else data
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    bad = video.split(".", 1)[0]
    config = dict(root=str(root), num_frames=2, frame_stride=1, resolution=32, start="first")
    dataset = IndexedClipDataset(ClipDatasetConfig(**config))
    item = dataset[(0, [dataset.key(i) for i in range(len(dataset))].index(bad))]
    assert item["key"] != bad and f"shard {tar.name}, sample {bad}" in item[DAMAGED_KEY]
    DamageTally(dataset).account({DAMAGED_KEY: [item[DAMAGED_KEY]]})  # one of six: within max(8, 5%)
    strict = IndexedClipDataset(ClipDatasetConfig(**config, damage=DamagePolicy(fraction=0.0, minimum=0)))
    with pytest.raises(DamagedDataError, match=r"1 of 6 samples are damaged \(while training\), more than the limit of 0 \(max\(0, 0%\)\)"):
        DamageTally(strict).account({DAMAGED_KEY: [item[DAMAGED_KEY]]})
