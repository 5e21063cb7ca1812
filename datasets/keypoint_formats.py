"""Keypoint files people already have, converted to our COCO-17 layout (:mod:`datasets.keypoints`).

Three formats, each documented by its producer:

- **OpenPose JSON** (``--write_json``): one file per frame, ``{"people": [{"pose_keypoints_2d": [x0, y0, c0,
  x1, ...]}, ...]}``. The layout is told apart by the array's length: 75 values are BODY_25, 54 values are
  COCO-18 (OpenPose-18). Other lengths are refused. ``face_keypoints_2d``/``hand_*_keypoints_2d`` are ignored.
- **DWPose / controlnet_aux keypoint dicts**: ``{"bodies": {"candidate": [[x, y], ...], "subset": [[i0, ...,
  i17], ...]}, "faces": ..., "hands": ...}``. ``candidate`` holds every detected body point, normalised to 0-1
  of the image; ``subset`` has one row per person, whose entry k is the row of ``candidate`` holding the
  person's OpenPose-18 point k, or -1 when it was not detected (DWPose marks points under its 0.3 threshold so).
  ControlNet's OpenPose variant gives ``candidate`` rows ``[x, y, score, id]`` and ``subset`` rows of 20 (the
  last two are the person's total score and part count): the score column is used, the extra columns ignored.
  ``faces`` and ``hands`` are ignored. A file may hold one dict (one frame) or a list of them (frames).
- **ComfyUI POSE_KEYPOINT** (what comfyui_controlnet_aux's DWPose and OpenPose nodes output as
  ``openpose_json``): a list with one entry per frame, ``{"people": [{"pose_keypoints_2d": [...]}, ...],
  "canvas_width": W, "canvas_height": H}``, OpenPose-18 order, ``c`` 1 for a detected point and 0 (with x = y =
  0) for a missing one. A single such dict (controlnet_aux's ``people``-style output) is read as one frame.

Point mapping (COCO-17 index and name <- index in BODY_25 / in OpenPose-18, the layout of COCO-18, DWPose and
ComfyUI)::

    0 nose            <- 0  / 0          9 left_wrist   <- 7  / 7
    1 left_eye        <- 16 / 15        10 right_wrist  <- 4  / 4
    2 right_eye       <- 15 / 14        11 left_hip     <- 12 / 11
    3 left_ear        <- 18 / 17        12 right_hip    <- 9  / 8
    4 right_ear       <- 17 / 16        13 left_knee    <- 13 / 12
    5 left_shoulder   <- 5  / 5         14 right_knee   <- 10 / 9
    6 right_shoulder  <- 2  / 2         15 left_ankle   <- 14 / 13
    7 left_elbow      <- 6  / 6         16 right_ankle  <- 11 / 10
    8 right_elbow     <- 3  / 3

Dropped: the neck (index 1 in both layouts; COCO-17 has none, and our renderer draws the shoulders without
one; DWPose's neck is only the mean of the shoulders anyway), BODY_25's mid-hip (8) and its six foot points
(19-24: big toes, small toes, heels), and every face and hand point. Derived: none. Every COCO-17 point has
its own point in both OpenPose layouts, so no point is made up and none is absent by construction; a point
the file does not have is missing (below).

Scores: OpenPose's and ComfyUI's confidence ``c`` becomes the score unchanged. DWPose's dict keeps no
confidence, only whether a point passed its threshold: a point it lists gets score 1.0 (ControlNet's
``[x, y, score, id]`` candidates give their score). Missing: a point with ``c <= 0``, a subset entry of -1
(or pointing outside ``candidate``) and a person whose array is empty become ``[0, 0, 0]``; a frame with no
people is a ``(0, 17, 3)`` array. People are kept in the file's order, none is dropped.

Pixels: the result is in pixels of the frame, origin top-left. When the file gives the canvas
(``canvas_width``/``canvas_height``) and every present coordinate lies within [0, 1], the coordinates are
normalised and are multiplied by the canvas width (x) and height (y); otherwise they are taken as pixels
(comfyui_controlnet_aux's DWPose node writes pixels of its canvas, its OpenPose node normalised values; a real
pose in pixels never fits in one pixel). Without a canvas (OpenPose's own files, controlnet_aux's dicts):
pixel coordinates get the size of the smallest frame leaving the same margin right and below as left and
above the points of all frames, ``(ceil(max x + min x), ceil(max y + min y))``; normalised ones cannot be
placed and are refused, saying to add ``canvas_width``/``canvas_height`` to the file. OpenPose's
``--keypoint_scale`` ranges other than pixels and [0, 1] (for example [-1, 1]) are not supported. None of
these formats records a frame rate: :func:`read_keypoint_source` returns None for it.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from datasets.keypoints import checked_keypoints, empty_keypoints

BODY25_TO_COCO17 = (0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11)
"""For each COCO-17 point, its index in OpenPose's BODY_25 layout."""
OPENPOSE18_TO_COCO17 = (0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10)
"""For each COCO-17 point, its index in OpenPose-18 (OpenPose's COCO-18, DWPose, ControlNet, ComfyUI)."""
LAYOUTS = {25: ("BODY_25", BODY25_TO_COCO17), 18: ("COCO-18", OPENPOSE18_TO_COCO17)}

Canvas = tuple[int, int] | None
"""``(width, height)`` a file gives for a frame, or None."""


def openpose_person(values, where: str = "") -> np.ndarray:
    """One OpenPose ``pose_keypoints_2d`` list (BODY_25 or COCO-18, by length) as a ``(17, 3)`` array, in its units."""
    try:
        flat = np.asarray(values if values is not None else [], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{where}pose_keypoints_2d must be a flat list of numbers, got {values!r:.80}") from None
    if flat.size == 0:
        return empty_keypoints(1)[0]
    points = len(flat) // 3
    if len(flat) % 3 or points not in LAYOUTS:
        raise ValueError(
            f"{where}pose_keypoints_2d has {len(flat)} values: expected 75 (BODY_25, 25 points x 3) "
            "or 54 (COCO-18, 18 points x 3)"
        )
    person = flat.reshape(points, 3)[list(LAYOUTS[points][1])]
    person[person[:, 2] <= 0] = 0.0
    return person.astype(np.float32)


def _people_frame(record: dict, where: str) -> tuple[np.ndarray, Canvas]:
    """One OpenPose-style frame dict (``people`` [+ ``canvas_width``/``canvas_height``]): keypoints in its units, canvas."""
    people = record.get("people")
    if not isinstance(people, list):
        raise ValueError(f"{where}has no 'people' list (keys: {sorted(record)})")
    if not all(isinstance(person, dict) for person in people):
        raise ValueError(f"{where}'people' must be a list of objects with 'pose_keypoints_2d'")
    persons = [openpose_person(person.get("pose_keypoints_2d"), where) for person in people]
    keypoints = np.stack(persons) if persons else empty_keypoints()
    return keypoints, _canvas(record, where)


def _canvas(record: dict, where: str) -> Canvas:
    if "canvas_width" not in record and "canvas_height" not in record:
        return None
    width, height = record.get("canvas_width"), record.get("canvas_height")
    if not all(isinstance(side, (int, float)) and side >= 1 for side in (width, height)):
        raise ValueError(f"{where}canvas_width/canvas_height must be positive numbers, got {width!r}, {height!r}")
    return int(width), int(height)


def from_openpose(records: list[dict], names: list[str] | None = None) -> tuple[list[np.ndarray], tuple[int, int]]:
    """OpenPose JSON frames (one parsed file each, BODY_25 or COCO-18): ``(per-frame (P, 17, 3) pixels, (width, height))``."""
    names = names or [f"frame {index}" for index in range(len(records))]
    frames = [_people_frame(record, f"{name}: ") for record, name in zip(records, names)]
    return to_pixels(frames, "the OpenPose files")


def from_comfyui(frames: list[dict] | dict) -> tuple[list[np.ndarray], tuple[int, int]]:
    """A ComfyUI POSE_KEYPOINT list (or one such frame dict): ``(per-frame (P, 17, 3) pixels, (width, height))``."""
    frames = [frames] if isinstance(frames, dict) else frames
    parsed = [_people_frame(frame, f"POSE_KEYPOINT frame {index}: ") for index, frame in enumerate(frames)]
    return to_pixels(parsed, "the POSE_KEYPOINT frames")


def dwpose_frame(pose: dict, where: str = "") -> tuple[np.ndarray, Canvas]:
    """One DWPose/controlnet_aux dict as ``(P, 17, 3)`` in its units (normalised 0-1 as documented), and its canvas."""
    bodies = pose.get("bodies")
    if not isinstance(bodies, dict) or "candidate" not in bodies or "subset" not in bodies:
        raise ValueError(f"{where}'bodies' must be a dict with 'candidate' and 'subset' (got {bodies!r:.80})")
    candidate, subset = _rows(bodies["candidate"], 2), _rows(bodies["subset"], 18)
    if candidate is None or subset is None:
        raise ValueError(f"{where}'candidate' must be rows of [x, y(, score, id)] and 'subset' rows of 18 (or 20) entries")
    keypoints = empty_keypoints(len(subset))
    for person, row in enumerate(subset[:, :18]):
        for coco, openpose in enumerate(OPENPOSE18_TO_COCO17):
            index = int(row[openpose]) if np.isfinite(row[openpose]) else -1
            if 0 <= index < len(candidate):
                x, y, *rest = candidate[index]
                score = rest[0] if rest else 1.0
                keypoints[person, coco] = (x, y, score) if score > 0 else (0.0, 0.0, 0.0)
    return keypoints, _canvas(pose, where)


def _rows(value, width: int) -> np.ndarray | None:
    """``value`` as a 2-D float array with at least ``width`` columns (empty: ``(0, width)``), or None."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if array.size == 0:
        return np.zeros((0, width))
    return array if array.ndim == 2 and array.shape[1] >= width else None


def from_dwpose(poses: list[dict] | dict, size: tuple[int, int] | None = None) -> tuple[list[np.ndarray], tuple[int, int]]:
    """DWPose/controlnet_aux dicts (one, or a list of frames): ``(per-frame (P, 17, 3) pixels, (width, height))``.

    ``size`` is the ``(width, height)`` the normalised coordinates refer to, when the dicts carry no
    ``canvas_width``/``canvas_height``.
    """
    poses = [poses] if isinstance(poses, dict) else poses
    frames = [dwpose_frame(pose, f"DWPose frame {index}: ") for index, pose in enumerate(poses)]
    frames = [(keypoints, canvas or size) for keypoints, canvas in frames]
    return to_pixels(frames, "the DWPose dicts")


def to_pixels(frames: list[tuple[np.ndarray, Canvas]], what: str) -> tuple[list[np.ndarray], tuple[int, int]]:
    """Per-frame ``(keypoints in the file's units, canvas)`` -> ``(keypoints in pixels, (width, height))`` (module docstring)."""
    if not frames:
        raise ValueError(f"{what} hold no frame")
    canvases = {canvas for _, canvas in frames}
    if len(canvases) > 1:
        raise ValueError(f"{what} give different canvas sizes ({sorted(canvases, key=str)}): one sequence has one frame size")
    canvas = canvases.pop()
    present = np.concatenate([k[k[..., 2] > 0, :2] for k, _ in frames]).reshape(-1, 2)
    normalised = len(present) > 0 and bool(((present >= 0) & (present <= 1)).all())
    if canvas is None and normalised:
        raise ValueError(f"{what} have normalised coordinates (all within 0-1) but no canvas size: add "
                         "\"canvas_width\" and \"canvas_height\" (pixels) to the file")  # fmt: skip
    if canvas is None:
        if not len(present):
            raise ValueError(f"{what} have no detected point and no canvas size: nothing to place in a frame")
        far, near = present.max(axis=0), present.min(axis=0)
        canvas = (max(1, math.ceil(far[0] + near[0])), max(1, math.ceil(far[1] + near[1])))
    scale = np.array([canvas[0], canvas[1], 1.0] if normalised else [1.0, 1.0, 1.0], dtype=np.float32)
    return [checked_keypoints(keypoints * scale) for keypoints, _ in frames], canvas


def _natural_key(path: Path) -> list:
    """Sort key: the name with digit runs compared as numbers (``frame_2`` before ``frame_10``)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _load_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not JSON: {error}") from None


def describe(value) -> str:
    """A short description of a parsed JSON value's shape, for error messages."""
    if isinstance(value, dict):
        return f"an object with keys {sorted(value)[:8]}"
    if isinstance(value, list):
        kinds = sorted({describe(item) for item in value[:50]})
        return f"a list of {len(value)} ({'; '.join(kinds[:3]) or 'empty'})"
    return f"a {type(value).__name__}"


def json_kind(value) -> str | None:
    """``"openpose"`` (one frame dict with ``people``), ``"comfyui"`` (a list of them), ``"dwpose"`` (a dict with
    ``bodies`` or a list of them), ``"mixed"`` (a list with both kinds), or None."""
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(item, dict) for item in items):
        return None
    kinds = {"people" if "people" in item else "bodies" if "bodies" in item else None for item in items}
    if kinds == {"people"}:
        return "comfyui" if isinstance(value, list) else "openpose"
    if kinds == {"bodies"}:
        return "dwpose"
    return "mixed" if {"people", "bodies"} <= kinds else None


def read_keypoint_source(path: str | Path) -> tuple[list[np.ndarray], tuple[int, int], float | None]:
    """Read a folder of OpenPose JSON frames (sorted by name, numbers by value) or one JSON file (a DWPose/controlnet_aux
    dict or list of them, a ComfyUI POSE_KEYPOINT list, or one OpenPose frame): ``(per-frame (P, 17, 3) float32 in
    pixels, (width, height), fps or None)``. Anything else is a ``ValueError`` saying what was found."""
    path = Path(path)
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.suffix.lower() == ".json" and p.is_file()), key=_natural_key)
        if not files:
            raise ValueError(f"{path} holds no .json file: not a folder of OpenPose keypoint frames")
        records = [_load_json(file) for file in files]
        wrong = [(f, r) for f, r in zip(files, records) if json_kind(r) != "openpose"]
        if wrong:
            raise ValueError(f"{wrong[0][0]} is {describe(wrong[0][1])}, not an OpenPose frame ({{\"people\": [...]}}): "
                             f"{len(wrong)} of the {len(files)} .json files in {path} are not")  # fmt: skip
        frames, size = from_openpose(records, [file.name for file in files])
        return frames, size, None
    value = _load_json(path)
    kind = json_kind(value)
    if kind == "dwpose":
        frames, size = from_dwpose(value)
    elif kind in ("comfyui", "openpose"):
        frames, size = from_comfyui(value) if kind == "comfyui" else from_openpose([value], [path.name])
    elif kind == "mixed":
        raise ValueError(f"{path} mixes OpenPose/ComfyUI frames ({{\"people\": ...}}) and DWPose dicts ({{\"bodies\": ...}}): "
                         "one format per file")  # fmt: skip
    else:
        raise ValueError(
            f"{path} is {describe(value)}: not a keypoint file this reads (an OpenPose frame {{\"people\": [...]}}, "
            "a ComfyUI POSE_KEYPOINT list of such frames, or DWPose dicts {\"bodies\": {\"candidate\", \"subset\"}}, "
            "one format per file)"
        )
    return frames, size, None


def is_keypoint_source(path: str | Path) -> bool:
    """Whether ``path`` looks like input for :func:`read_keypoint_source` (a .json file, or a folder holding .json files)."""
    path = Path(path)
    if path.is_dir():
        return any(p.suffix.lower() == ".json" for p in path.iterdir())
    return path.suffix.lower() == ".json"
