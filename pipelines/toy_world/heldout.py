"""The held-out evaluation set: pose sequences and prompts no training sample used, and a spec to generate from.

``eval/`` holds, per entry ``KEY``:

- ``poses/KEY/``: the pose sequence in the layout of ``python -m pose_extraction.video``
  (``keypoints.json``, ``keypoints.parquet``, ``pose.mp4``), which ``training.generate --pose``
  reads and keeps as ground truth in its record;
- ``oracle/KEY.mp4`` with ``KEY.pose.mp4`` and ``KEY.json`` (:mod:`datasets.generated`): the toy
  world's own rendering of the entry, i.e. a perfect generator, so the evaluation's upper bound
  (and its plumbing) can be measured on real files;

and, written last (the set is complete when it exists), ``spec.json`` in the format of
:mod:`datasets.toy_world` (``short`` entries have ``eval_frames`` frames; ``long`` ones
``eval_long_frames`` frames, for window-boundary consistency; ``seed`` is a per-entry
generation seed).

Held out: prompts use the colour pairs kept out of training; poses come from random
streams training never draws from.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from datasets.atomic import write_bytes
from datasets.generated import make_record, sidecar_paths, write_record
from datasets.keypoints import COCO17_NAMES
from datasets.pose_sequence import (
    KIND,
    SCHEMA_VERSION,
    VIDEO_NAME,
    PoseSequence,
    write_keypoints,
)
from datasets.toy_world import SPEC_KIND, SPEC_NAME, SPEC_VERSION, read_spec
from datasets.shards import write_json_atomic
from pipelines.toy_world.config import GENERATOR, ToyWorldConfig
from pipelines.toy_world.samples import STREAMS, ToySample, draw_sample, toy_extra
from pipelines.toy_world.writers import KEYPOINT_THRESHOLD, encode_mp4, mask_boxes
from pose_extraction.skeleton import render_sequence

log = logging.getLogger(__name__)


def pose_sequence(config: ToyWorldConfig, sample: ToySample) -> PoseSequence:
    """The entry's keypoints as a :class:`pose_extraction.video.PoseSequence` (identity transform, one tracked person)."""
    frames = len(sample.keypoints)
    header = {
        "schema": KIND, "schema_version": SCHEMA_VERSION, "fps": config.fps, "width": config.size, "height": config.size,
        "frames": frames, "keypoint_layout": "coco17", "keypoint_names": list(COCO17_NAMES),
        "keypoint_threshold": KEYPOINT_THRESHOLD, "estimator": GENERATOR, "smoothing": {"method": "none"},
        "source": {"path": None, "fps": config.fps, "width": config.size, "height": config.size, "generator": GENERATOR},
        "every": 1, "start": 0.0, "video": VIDEO_NAME,
        "transform": {"scale_x": 1.0, "scale_y": 1.0, "offset_x": 0, "offset_y": 0},
    }  # fmt: skip
    boxes = mask_boxes(sample.masks)
    return PoseSequence(
        header=header, keypoints=list(sample.keypoints), boxes=[b[None] for b in boxes],
        box_scores=[np.ones(1, np.float32)] * frames, track_ids=[[0]] * frames,
        times=[t / config.fps for t in range(frames)], source_frames=list(range(frames)),
    )  # fmt: skip


def write_entry(config: ToyWorldConfig, sample: ToySample, root: Path) -> dict:
    """Write one entry's pose folder and oracle video; returns its spec entry."""
    pose_dir = root / "poses" / sample.key
    pose_dir.mkdir(parents=True, exist_ok=True)
    skeleton_mp4 = encode_mp4(render_sequence(list(sample.keypoints), config.size, config.size), config)
    write_bytes(pose_dir / VIDEO_NAME, skeleton_mp4)
    write_keypoints(pose_dir, pose_sequence(config, sample), "both")
    video = root / "oracle" / f"{sample.key}.mp4"
    video.parent.mkdir(parents=True, exist_ok=True)
    pose_video, _ = sidecar_paths(video)
    write_bytes(pose_video, skeleton_mp4)
    record = make_record(
        prompt=sample.caption, keypoints_per_frame=list(sample.keypoints), width=config.size, height=config.size,
        frames=len(sample.frames), fps=config.fps, model=f"{GENERATOR}_oracle", settings={"toy": toy_extra(config, sample)},
        source=str(Path("poses") / sample.key), key=sample.key,
    )  # fmt: skip
    write_record(video, record)
    write_bytes(video, encode_mp4(sample.frames, config))  # last: a video with its record is what evaluation scans
    palette = config.palette
    return {
        "key": sample.key, "set": sample.kind, "prompt": sample.caption, "figure": sample.figure,
        "background": sample.background, "figure_rgb": list(palette[sample.figure]),
        "background_rgb": list(palette[sample.background]), "held_out_pair": sample.held_out_pair,
        "frames": len(sample.frames), "fps": config.fps, "width": config.size, "height": config.size,
        "seed": int(np.random.default_rng([config.seed, 0x5EED, STREAMS[sample.kind], sample.index]).integers(2**31)),
        "pose": str(Path("poses") / sample.key), "oracle": str(Path("oracle") / video.name),
    }  # fmt: skip


def write_eval_set(config: ToyWorldConfig, root: str | Path) -> dict:
    """Write the held-out set into ``root`` (skipped when its ``spec.json`` is there); returns the spec."""
    root = Path(root)
    if (root / SPEC_NAME).exists():
        log.info("evaluation set %s is complete, skipped", root)
        return read_spec(root)
    root.mkdir(parents=True, exist_ok=True)
    for partial in ("poses", "oracle"):  # an interrupted run's entries are cheap to redraw
        shutil.rmtree(root / partial, ignore_errors=True)
    entries = [write_entry(config, draw_sample(config, "short", i), root) for i in range(config.eval_videos)]
    entries += [write_entry(config, draw_sample(config, "long", i), root) for i in range(config.eval_long_videos)]
    write_json_atomic(root / "config.json", config.to_dict())
    spec = {
        "schema": SPEC_KIND, "schema_version": SPEC_VERSION, "size": config.size, "fps": config.fps,
        **config.reference_fields, "caption_template": config.caption_template,
        "held_out_pairs": [list(p) for p in config.held_out_pairs], "config": config.to_dict(), "entries": entries,
    }  # fmt: skip
    write_json_atomic(root / SPEC_NAME, spec)
    return spec
