"""Command line of the LAION-Pose builder: :class:`~pipelines.laion_pose.config.CommandConfig`, read by
:func:`datasets.cli.parse` (``--help`` lists every option; ``--config FILE.yaml`` sets any of them).

Without ``--input`` the job runs the bundled sample (:data:`SAMPLE_PARQUET`, its images beside it as relative
``file`` URLs, allowed for that folder only) into ``outputs/laion_pose_sample``. The flags of earlier versions keep
working (:data:`RENAMED`, ``--ignore-robots-tag``, repeated ``--allow-file-root`` / ``--allow-host``).
"""

from __future__ import annotations

import logging
import sys

from datasets import cli
from pipelines.laion_pose.config import SAMPLE_DIR, SAMPLE_OUTPUT, SAMPLE_PARQUET, CommandConfig, JobConfig

__all__ = ["SAMPLE_DIR", "SAMPLE_OUTPUT", "SAMPLE_PARQUET", "main", "parse_command", "parse_config"]

PROG = "build_laion_pose.py"
DESCRIPTION = (
    "Build LAION-Pose: download LAION images with img2dataset, estimate poses, keep images with enough visible "
    "keypoints, write WebDataset shards + parquet index + stats. Resumable. Without arguments: the bundled sample "
    "into outputs/laion_pose_sample."
)
RENAMED = {
    "--input": "input.path",
    "--download-threads": "download.thread_count",
    "--allow-file-root": "download.allowed_file_roots",
    "--allow-host": "download.allowed_hosts",
    "--pose-batch-size": "pose.person_batch_size",
    "--ray-address": "ray.address",
    "--ray-temp-dir": "ray.temp_dir",
}
"""Flags of earlier versions (and short forms) -> the field they set."""


def _old_spellings(argv: list[str]) -> list[str]:
    """``--ignore-robots-tag`` as the field it inverts (the other old flags are in :data:`RENAMED`)."""
    return [token for arg in argv for token in (
        ["--download.honour_robots_tag", "false"] if arg == "--ignore-robots-tag" else [arg])]  # fmt: skip


def parse_command(argv: list[str] | None = None) -> CommandConfig:
    """The command line as a :class:`CommandConfig`. A malformed flag exits 2 with one line; a value the config
    dataclasses refuse raises ValueError."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return cli.parse(
        CommandConfig, _old_spellings(argv), prog=PROG, description=DESCRIPTION, renamed=RENAMED, config_error=ValueError
    )


def _labels(argv: list[str] | None) -> dict[str, str]:
    """Pose fields the user set with their old flag, named so in errors."""
    argv = sys.argv[1:] if argv is None else argv
    typed = any(arg == "--pose-batch-size" or arg.startswith("--pose-batch-size=") for arg in argv)
    return {"person_batch_size": "--pose-batch-size"} if typed else {}


def parse_config(argv: list[str] | None = None) -> JobConfig:
    """The :class:`JobConfig` the command line describes (the bundled sample when ``--input`` is absent); a
    ValueError for values the configs refuse (a flag the chosen pose backend has no option for, ...)."""
    return parse_command(argv).to_job_config(labels=_labels(argv))


def main(argv: list[str] | None = None) -> int:
    """Run the job; exit code 0 when every shard is finished, 1 when some failed (rerun resumes), 2 on bad input,
    130 when interrupted (Ctrl-C)."""
    from pipelines.laion_pose.job import run_job

    try:
        command = parse_command(argv)
        config = command.to_job_config(labels=_labels(argv))
        level = logging.getLevelName(command.log_level.upper())
        if not isinstance(level, int):
            raise ValueError(f"--log-level {command.log_level!r} is not a logging level (DEBUG, INFO, WARNING, ERROR)")
    except ValueError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        totals = run_job(config, command.saved(config))
    except (ValueError, FileNotFoundError) as err:
        logging.getLogger("build_laion_pose").error("%s", err)
        return 2
    except KeyboardInterrupt:  # the actors are stopped and the output lock released on the way out
        logging.getLogger("build_laion_pose").error("interrupted: finished shards are kept; rerun the same command to resume")
        return 130
    print(f"LAION-Pose in {config.output}: {totals['input_rows']} input rows, counts {totals['counts']}")
    return 0 if totals["complete"] else 1
