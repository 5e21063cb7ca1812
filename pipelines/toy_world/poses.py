"""Random plausible COCO-17 poses of a 2D humanoid with joint-angle limits, and smooth motions of it.

The body faces the camera, so the person's left side is on the image's right. A
pose is a vector of :data:`PARAMETERS` (torso lean, head tilt and turn, shoulder,
elbow, hip and knee angles per side, root offset); each is drawn uniformly inside
its limits. Arms hang from the torso frame (they lean with it); legs hang from
the world's vertical. Angles are in degrees:

- shoulder: 0 = arm down along the torso, positive = raised sideways away from the
  body (170: nearly straight up), negative = across the body;
- elbow: the forearm's turn from the upper arm's direction, positive = further up
  (a flexed "strong arm"), bounded by the joint;
- hip: 0 = leg straight down, positive = raised sideways;
- knee: the shin's turn back towards the body's midline (positive) from the thigh, and the shin
  points at most :data:`SHIN_CROSS` degrees past vertical towards the other leg (knee <= hip + 35).

:func:`keypoints_from_params` is the exact forward kinematics (body height about 1)
and :func:`joint_angles` its inverse, so tests check the limits on the keypoints
themselves. :func:`fit_to_frame` scales and places poses (one or a whole motion)
so the drawn figure lies inside the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pose_extraction.figure import DEFAULT_FIGURE_STYLE, FigureStyle, extent_margins

PARAMETERS: tuple[tuple[str, float, float], ...] = (
    ("lean", -20.0, 20.0),
    ("head_tilt", -30.0, 30.0),
    ("head_turn", -1.0, 1.0),
    ("left_shoulder", -20.0, 170.0),
    ("right_shoulder", -20.0, 170.0),
    ("left_elbow", -30.0, 145.0),
    ("right_elbow", -30.0, 145.0),
    ("left_hip", -15.0, 80.0),
    ("right_hip", -15.0, 80.0),
    ("left_knee", -15.0, 120.0),
    ("right_knee", -15.0, 120.0),
    ("root_x", -0.4, 0.4),
    ("root_y", -0.08, 0.08),
)
"""``(name, low, high)``: angles in degrees, head turn in [-1, 1] (face to the image left .. right), root in body heights."""
NAMES = tuple(p[0] for p in PARAMETERS)
LOW = np.array([p[1] for p in PARAMETERS])
HIGH = np.array([p[2] for p in PARAMETERS])
INDEX = {name: i for i, name in enumerate(NAMES)}
ANGLES = tuple(n for n in NAMES if n not in ("head_turn", "root_x", "root_y"))
SHIN_CROSS = 35.0
"""The coupled knee limit: ``knee - hip <= SHIN_CROSS`` (linear, so eased motions between valid poses stay valid)."""
MARGIN_PX = 2.0
"""Pixels kept free between the drawn figure and the image border."""

# Face keypoints around the head centre, in head radii: (x to the person's left, y down), per unit of head turn.
_FACE_BASE = np.array([[0.0, 0.2], [0.35, -0.15], [-0.35, -0.15], [0.55, 0.0], [-0.55, 0.0]])
_FACE_TURN = np.array([[0.55, 0.0], [0.45, 0.0], [0.45, 0.0], [0.15, 0.0], [0.15, 0.0]])  # all within 0.8 radii of the centre


@dataclass(frozen=True)
class Proportions:
    """Segment lengths in body heights (a standing figure is about 1 tall)."""

    torso: float = 0.30
    neck: float = 0.08
    shoulder_half: float = 0.10
    hip_half: float = 0.06
    upper_arm: float = 0.16
    forearm: float = 0.15
    thigh: float = 0.23
    shin: float = 0.23

    @classmethod
    def sample(cls, rng: np.random.Generator, jitter: float = 0.08) -> "Proportions":
        """Every length scaled by its own factor in ``1 +- jitter`` (left and right stay equal)."""
        base = cls()
        return cls(**{name: value * float(rng.uniform(1 - jitter, 1 + jitter)) for name, value in vars(base).items()})


def apply_limits(params: np.ndarray) -> np.ndarray:
    """``params`` clipped into the limits of :data:`PARAMETERS` and the coupled knee limit."""
    params = np.clip(np.asarray(params, dtype=np.float64), LOW, HIGH)
    for side in ("left", "right"):
        knee, hip = INDEX[f"{side}_knee"], INDEX[f"{side}_hip"]
        params[..., knee] = np.minimum(params[..., knee], params[..., hip] + SHIN_CROSS)
    return params


def within_limits(params: np.ndarray, tolerance: float = 1e-6) -> bool:
    """Whether every pose of ``params`` (``(..., P)``) respects all limits."""
    params = np.asarray(params, dtype=np.float64)
    return bool(np.all(np.abs(apply_limits(params) - params) <= tolerance))


def sample_params(rng: np.random.Generator) -> np.ndarray:
    """A pose drawn uniformly inside the limits (knees past the coupled limit are pulled back to it)."""
    return apply_limits(rng.uniform(LOW, HIGH))


def _unit(angle_deg: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array([math.sin(a), -math.cos(a)])


def keypoints_from_params(params: np.ndarray, body: Proportions, style: FigureStyle = DEFAULT_FIGURE_STYLE) -> np.ndarray:
    """``(17, 2)`` keypoints of one pose in body units (y down). The face is sized by ``style.head_radius``."""
    p = dict(zip(NAMES, np.asarray(params, dtype=np.float64)))
    up = _unit(p["lean"])
    side = np.array([-up[1], up[0]])  # the person's left (image +x when upright)
    pelvis = np.array([p["root_x"], p["root_y"]])
    neck = pelvis + body.torso * up
    points = np.zeros((17, 2))
    for s, prefix in ((1.0, "left"), (-1.0, "right")):
        joints = [index + (0 if s > 0 else 1) for index in (5, 7, 9, 11, 13, 15)]
        shoulder = neck + s * body.shoulder_half * side
        hip = pelvis + s * body.hip_half * side
        arm = math.radians(p[f"{prefix}_shoulder"])
        fore = arm + math.radians(p[f"{prefix}_elbow"])
        elbow = shoulder + body.upper_arm * (-math.cos(arm) * up + s * math.sin(arm) * side)
        wrist = elbow + body.forearm * (-math.cos(fore) * up + s * math.sin(fore) * side)
        thigh = math.radians(p[f"{prefix}_hip"])
        shin = thigh - math.radians(p[f"{prefix}_knee"])
        knee = hip + body.thigh * np.array([s * math.sin(thigh), math.cos(thigh)])
        ankle = knee + body.shin * np.array([s * math.sin(shin), math.cos(shin)])
        points[joints] = shoulder, elbow, wrist, hip, knee, ankle
    head_up = _unit(p["lean"] + p["head_tilt"])
    head_side = np.array([-head_up[1], head_up[0]])
    centre = neck + body.neck * head_up
    radius = style.head_radius * body.torso
    face = _FACE_BASE + p["head_turn"] * _FACE_TURN
    face -= face.mean(axis=0)  # the renderer centres the head on the mean of the face points
    points[:5] = centre + radius * (face[:, :1] * head_side - face[:, 1:] * head_up)
    return points


def _angle_from(vector: np.ndarray, down: np.ndarray, side: np.ndarray, s: float) -> float:
    return math.degrees(math.atan2(s * float(vector @ side), float(vector @ down)))


def _wrap(angle: float) -> float:
    return (angle + 180.0) % 360.0 - 180.0


def joint_angles(points: np.ndarray) -> dict[str, float]:
    """The joint angles of :data:`ANGLES` (degrees) recovered from ``(17, 2+)`` keypoints: the inverse kinematics."""
    points = np.asarray(points, dtype=np.float64)[:, :2]
    neck, pelvis = points[[5, 6]].mean(axis=0), points[[11, 12]].mean(axis=0)
    torso = neck - pelvis
    lean = math.degrees(math.atan2(torso[0], -torso[1]))
    up = _unit(lean)
    side = np.array([-up[1], up[0]])
    head = points[:5].mean(axis=0) - neck
    angles = {"lean": lean, "head_tilt": _wrap(math.degrees(math.atan2(head[0], -head[1])) - lean)}
    world_down, world_side = np.array([0.0, 1.0]), np.array([1.0, 0.0])
    for s, prefix, o in ((1.0, "left", 0), (-1.0, "right", 1)):
        arm = _angle_from(points[7 + o] - points[5 + o], -up, side, s)
        fore = _angle_from(points[9 + o] - points[7 + o], -up, side, s)
        thigh = _angle_from(points[13 + o] - points[11 + o], world_down, world_side, s)
        shin = _angle_from(points[15 + o] - points[13 + o], world_down, world_side, s)
        angles.update({f"{prefix}_shoulder": arm, f"{prefix}_elbow": _wrap(fore - arm),
                       f"{prefix}_hip": thigh, f"{prefix}_knee": _wrap(thigh - shin)})  # fmt: skip
    return angles


def figure_box(points: np.ndarray, body: Proportions, style: FigureStyle = DEFAULT_FIGURE_STYLE) -> np.ndarray:
    """``(x0, y0, x1, y1)`` reached by the drawing of ``(..., 17, 2)`` unit keypoints (all frames together)."""
    half_limb, head = (m * body.torso for m in extent_margins(style))
    flat = np.asarray(points).reshape(-1, 17, 2)
    low, high = flat.reshape(-1, 2).min(axis=0) - half_limb, flat.reshape(-1, 2).max(axis=0) + half_limb
    centres = flat[:, :5].mean(axis=1)
    low = np.minimum(low, centres.min(axis=0) - head)
    high = np.maximum(high, centres.max(axis=0) + head)
    return np.concatenate([low, high])


def fit_to_frame(
    points: np.ndarray, body: Proportions, size: int, height_fraction: float, rng: np.random.Generator,
    style: FigureStyle = DEFAULT_FIGURE_STYLE,
) -> np.ndarray:
    """Scale and shift unit keypoints ``(..., 17, 2)`` into a ``size`` square: the drawing spans ``height_fraction``
    of the image height (less if it would not fit), placed uniformly at random, :data:`MARGIN_PX` from the border."""
    box = figure_box(points, body, style)
    width, height = box[2] - box[0], box[3] - box[1]
    room = size - 1 - 2 * MARGIN_PX
    scale = min(height_fraction * size / height, room / height, room / width)
    slack = np.maximum(0.0, room - np.array([width, height]) * scale)  # 0 (not -1e-15) when a side fills the room
    origin = MARGIN_PX + rng.uniform(0.0, 1.0, 2) * slack
    return (np.asarray(points) - box[:2]) * scale + origin


def with_scores(points: np.ndarray) -> np.ndarray:
    """``(..., 17, 2)`` pixel keypoints -> one person ``(..., 1, 17, 3)`` float32 at score 1, rounded as stored (3 decimals)."""
    points = np.asarray(points, dtype=np.float32)
    scores = np.ones(points.shape[:-1] + (1,), dtype=np.float32)
    return np.concatenate([points, scores], axis=-1)[..., None, :, :].round(3)


def smoothstep_path(keys: np.ndarray, frames: int, interval: int) -> np.ndarray:
    """``(frames, P)`` parameters passing through ``keys[k]`` at frame ``k * interval``, eased with 3u^2 - 2u^3
    in between: continuous in value and velocity, and inside the limits wherever the keys are (a convex mix)."""
    t = np.arange(frames)
    segment, u = t // interval, (t % interval) / interval
    w = (3 * u**2 - 2 * u**3)[:, None]
    return keys[segment] * (1 - w) + keys[segment + 1] * w


def max_displacement(points: np.ndarray) -> float:
    """Largest distance a keypoint moves between consecutive frames of ``(T, 17, 2)`` points (0 for one frame)."""
    points = np.asarray(points)
    if len(points) < 2:
        return 0.0
    return float(np.linalg.norm(np.diff(points[..., :2], axis=0), axis=-1).max())


@dataclass(frozen=True)
class Motion:
    """A smooth motion fitted into the image."""

    points: np.ndarray
    """``(T, 17, 2)`` float64 keypoints in pixels."""
    params: np.ndarray
    """``(T, len(PARAMETERS))`` pose parameters per frame (inside the limits)."""
    body: Proportions
    step: float
    """The key-pose step actually used (halved until the displacement bound held)."""


def sample_motion(
    rng: np.random.Generator, frames: int, *, size: int, height_fraction: float, interval: int, step: float,
    max_step_px: float, style: FigureStyle = DEFAULT_FIGURE_STYLE, retries: int = 6,
) -> Motion:
    """A figure moving smoothly: key poses every ``interval`` frames, each a random step of at most ``step`` x each
    parameter's range from the previous one (clipped to the limits), eased in between, then fitted into the image.

    No keypoint moves more than ``max_step_px`` between consecutive frames: a motion breaking that is redrawn with
    half the step, and the last attempt stands still, so the bound always holds.
    """
    if frames < 1 or interval < 1 or step < 0 or max_step_px <= 0:
        raise ValueError("need frames >= 1, interval >= 1, step >= 0 and max_step_px > 0")
    body = Proportions.sample(rng)
    start = sample_params(rng)
    keys_needed = (frames - 1) // interval + 2
    for attempt in range(retries + 1):
        current = 0.0 if attempt == retries else step * 0.5**attempt
        keys = [start]
        for _ in range(keys_needed - 1):
            keys.append(apply_limits(keys[-1] + rng.uniform(-1, 1, len(NAMES)) * current * (HIGH - LOW)))
        params = smoothstep_path(np.stack(keys), frames, interval)
        units = np.stack([keypoints_from_params(p, body, style) for p in params])
        points = fit_to_frame(units, body, size, height_fraction, rng, style)
        if max_displacement(points) <= max_step_px:
            return Motion(points=points, params=params, body=body, step=current)
    raise AssertionError("unreachable: a motion standing still has no displacement")  # pragma: no cover
