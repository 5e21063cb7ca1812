"""The pose-sequence record: per-frame COCO-17 keypoints of a driving video, and its skeleton video.

Written by ``python -m pose_extraction.video`` (and the toy-world builder's held-out poses); read by
``training.generate --pose``, ``evaluation.run`` and the pipeline through :func:`read_pose_sequence`.

Folder layout:

- ``keypoints.json``: ``schema`` ``"pose_sequence"``, ``schema_version`` 1,
  ``fps``, ``width``, ``height``, ``frames`` (T), ``keypoint_layout``
  ``"coco17"``, ``keypoint_names``, ``keypoint_threshold``, ``estimator``,
  ``smoothing``, ``source`` (path, fps, width, height), ``transform``
  (``output = source * scale - offset`` per axis), ``video`` (file name of the
  skeleton video), and per frame (lists of length T): ``times`` (seconds in the
  source), ``source_frames`` (index of the decoded source frame),
  ``keypoints`` (T lists of P_t persons x 17 x ``[x, y, score]``, pixels of the
  output frame, origin top-left), ``boxes`` (P_t x ``[x1, y1, x2, y2]``),
  ``box_scores`` (P_t) and ``track_ids`` (P_t ints, stable across frames for
  one person). P_t varies per frame (0 when nobody is found).
- ``keypoints.parquet``: the same, one row per frame: ``frame``, ``time``,
  ``source_frame``, ``person_count``, ``track_ids`` list<int32>,
  ``keypoints`` list<fixed_size_list<float32, 51>> (reshape to (P, 17, 3)),
  ``boxes`` list<fixed_size_list<float32, 4>>, ``box_scores`` list<float32>;
  the header (everything but the per-frame lists) is the JSON in the schema
  metadata key ``pose_sequence``.
- ``pose.mp4``: the skeletons drawn on black by :mod:`pose_extraction.skeleton`,
  T frames of ``size`` x ``size`` at ``fps / every`` (H.264, crf 12).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.atomic import atomic_path, write_json
from datasets.keypoints import as_keypoints

KIND = "pose_sequence"
SCHEMA_VERSION = 1
JSON_NAME, PARQUET_NAME, VIDEO_NAME = "keypoints.json", "keypoints.parquet", "pose.mp4"


@dataclass
class PoseSequence:
    """A pose sequence as :func:`read_pose_sequence` returns it (per-frame lists of length T)."""

    header: dict
    keypoints: list[np.ndarray]
    """One ``(P_t, 17, 3)`` float32 array per frame, output-frame pixels."""
    boxes: list[np.ndarray]
    box_scores: list[np.ndarray]
    track_ids: list[list[int]]
    times: list[float]
    source_frames: list[int]

    @property
    def fps(self) -> float:
        return float(self.header["fps"])

    def append(self, frame, keypoints, boxes, box_scores, track_ids) -> None:
        """Add one frame; ``frame`` has the source ``time`` (seconds) and ``source_frame`` (decoded index) of it."""
        self.keypoints.append(keypoints)
        self.boxes.append(boxes)
        self.box_scores.append(box_scores)
        self.track_ids.append(list(track_ids))
        self.times.append(frame.time)
        self.source_frames.append(frame.source_frame)


def write_keypoints(out: Path, sequence: PoseSequence, formats: str) -> None:
    """Write ``keypoints.json`` and/or ``keypoints.parquet`` (see the module docstring), each atomically."""
    frames = {
        "times": [round(t, 6) for t in sequence.times],
        "source_frames": sequence.source_frames,
        "keypoints": [k.round(3).tolist() for k in sequence.keypoints],
        "boxes": [b.round(2).tolist() for b in sequence.boxes],
        "box_scores": [s.round(4).tolist() for s in sequence.box_scores],
        "track_ids": sequence.track_ids,
    }
    if formats in ("json", "both"):
        write_json(out / JSON_NAME, {**sequence.header, **frames})
    if formats in ("parquet", "both"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema(
            [
                ("frame", pa.int32()), ("time", pa.float64()), ("source_frame", pa.int32()), ("person_count", pa.int32()),
                ("track_ids", pa.list_(pa.int32())), ("keypoints", pa.list_(pa.list_(pa.float32(), 51))),
                ("boxes", pa.list_(pa.list_(pa.float32(), 4))), ("box_scores", pa.list_(pa.float32())),
            ],
            metadata={KIND: json.dumps(sequence.header)},
        )  # fmt: skip
        table = pa.Table.from_pydict(
            {
                "frame": list(range(len(sequence.times))),
                "time": sequence.times,
                "source_frame": sequence.source_frames,
                "person_count": [len(k) for k in sequence.keypoints],
                "track_ids": sequence.track_ids,
                "keypoints": [k.reshape(-1, 51).tolist() for k in sequence.keypoints],
                "boxes": [b.tolist() for b in sequence.boxes],
                "box_scores": [s.tolist() for s in sequence.box_scores],
            },
            schema=schema,
        )
        with atomic_path(out / PARQUET_NAME) as temp:
            pq.write_table(table, temp)


def read_pose_sequence(directory: str | Path) -> PoseSequence:
    """Read a folder written by this tool (``keypoints.json`` if present, else ``keypoints.parquet``)."""
    directory = Path(directory)
    if (directory / JSON_NAME).exists():
        record = json.loads((directory / JSON_NAME).read_text())
        frame_lists = ("times", "source_frames", "keypoints", "boxes", "box_scores", "track_ids")
        header = {k: v for k, v in record.items() if k not in frame_lists}
        rows = {k: record[k] for k in frame_lists}
    elif (directory / PARQUET_NAME).exists():
        import pyarrow.parquet as pq

        table = pq.read_table(directory / PARQUET_NAME)
        header = json.loads(table.schema.metadata[KIND.encode()])
        rows = {"times": table.column("time").to_pylist(), "source_frames": table.column("source_frame").to_pylist()}
        rows.update({name: table.column(name).to_pylist() for name in ("keypoints", "boxes", "box_scores", "track_ids")})
    else:
        raise FileNotFoundError(f"{directory} holds neither {JSON_NAME} nor {PARQUET_NAME}")
    if header.get("schema") != KIND or header.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{directory} is not a pose sequence of schema version {SCHEMA_VERSION}")
    return PoseSequence(
        header=header,
        keypoints=[as_keypoints(np.asarray(k, np.float32).reshape(-1, 17, 3)) for k in rows["keypoints"]],
        boxes=[np.asarray(b, np.float32).reshape(-1, 4) for b in rows["boxes"]],
        box_scores=[np.asarray(s, np.float32).reshape(-1) for s in rows["box_scores"]],
        track_ids=[list(t) for t in rows["track_ids"]],
        times=list(rows["times"]),
        source_frames=list(rows["source_frames"]),
    )
