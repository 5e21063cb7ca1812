"""Command line of ``python -m pose_extraction.video``: :class:`CommandConfig`, read by :func:`datasets.cli.parse`.

    python -m pose_extraction.video DANCE.mp4 --out poses/dance [--pose-backend mmpose|mediapipe]
        [--fps 8] [--size 512] [--every 1] [--max-frames 32] [--smoothing none|ema|one_euro] [--config FILE.yaml]

``--help`` lists every option with its default; ``--config FILE.yaml`` sets any of them (the ``config.json`` a run
writes into its output folder is one). The video may come first as a bare argument (or as ``--video``); the flags
of earlier versions keep working (``--threshold`` for ``--style.threshold``, ``--size 0`` for the source size).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from datasets import cli
from pose_extraction.backends import PoseFlags
from pose_extraction.video import PoseVideoConfig, SequenceConfig, extract_pose_sequence

PROG = "python -m pose_extraction.video"
CONFIG_NAME = "config.json"
_PERSON_CAP = {"max_persons": 1, "det_max_persons": 1}
"""One person per frame unless ``--max-persons`` says otherwise (whichever option the backend has)."""


@dataclass(frozen=True, kw_only=True)
class CommandConfig(SequenceConfig):
    """Pose sequences from a driving video: keypoints per frame and a skeleton video, at the model's fps and size."""

    video: str
    """Driving video (any format FFmpeg reads); may be given as the first bare argument."""
    out: str
    """Output folder (keypoints.json / keypoints.parquet / pose.mp4 / config.json)."""
    pose: PoseFlags = field(default_factory=PoseFlags)
    """The pose estimator (one person per frame unless ``--max-persons``)."""
    verbose: bool = False
    """Debug logging (``-v``)."""

    def __post_init__(self) -> None:
        if self.size == 0:  # the old spelling of "the source size"
            object.__setattr__(self, "size", None)
        super().__post_init__()

    def to_video_config(self) -> PoseVideoConfig:
        """The library's :class:`PoseVideoConfig` (a ValueError for a flag the chosen pose backend has no option for)."""
        options = {f.name: getattr(self, f.name) for f in dataclasses.fields(SequenceConfig)}
        return PoseVideoConfig(pose=self.pose.to_pose_config(shared=_PERSON_CAP), **options)


def _bool_names() -> set[str]:
    names = {leaf.path.rsplit(".", 1)[-1] for leaf in cli.leaves(CommandConfig) if leaf.kind == "bool"}
    return {name.replace("_", "-") for name in names} | {"v"}


def _positional(argv: list[str]) -> list[str]:
    """``argv`` with a bare argument (the video) as ``--video VIDEO``: every flag here takes one value, a
    boolean at most one true/false word."""
    flags, bare, bools, i = [], [], _bool_names(), 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("-") or token == "-":
            bare.append(token)
            i += 1
            continue
        name = token.lstrip("-").partition("=")[0].rsplit(".", 1)[-1].replace("_", "-")
        takes = 0 if "=" in token or token in ("-h", "--help") else 1
        if name in bools or name.removeprefix("no-") in bools:
            following = argv[i + 1].lower() if i + 1 < len(argv) else ""
            takes = int(takes == 1 and following in ("true", "false", "yes", "no", "1", "0", "on", "off"))
        flags += argv[i : i + 1 + takes]
        i += 1 + takes
    return [*flags, *(token for video in bare for token in ("--video", video))]


def parse_command(argv: list[str] | None = None) -> CommandConfig:
    """The command line as a :class:`CommandConfig`; a malformed flag exits 2 with one line, a value the config
    refuses raises ValueError."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return cli.parse(CommandConfig, _positional(argv), prog=PROG, renamed={"-v": "verbose"}, config_error=ValueError)


def main(argv: list[str] | None = None) -> int:
    from datasets.atomic import write_json

    try:
        command = parse_command(argv)
        config = command.to_video_config()
        if not Path(command.video).exists():
            raise ValueError(f"{command.video} does not exist")
    except ValueError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.DEBUG if command.verbose else logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    sequence = extract_pose_sequence(command.video, command.out, config)
    write_json(Path(command.out) / CONFIG_NAME, dataclasses.asdict(command), indent=2)
    found = sum(len(k) > 0 for k in sequence.keypoints)
    print(f"{len(sequence.times)} frames at {sequence.fps:g} fps, people found on {found}; wrote {command.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
