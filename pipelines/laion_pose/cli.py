"""Command line of the LAION-Pose builder: a thin argparse layer mapping flags onto the config dataclasses.

Every flag defaults to None and only given flags reach the dataclasses, so the
defaults live in one place (:mod:`.config`, :mod:`pose_extraction`). Without
``--input`` the job runs the bundled sample (:data:`SAMPLE_PARQUET`, its
images beside it as relative ``file`` URLs, allowed for that folder only) into
``outputs/laion_pose_sample``.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from pipelines.laion_pose.config import DownloadConfig, InputConfig, JobConfig, PoseStageConfig, ResourcesConfig
from pipelines.ray_runtime import RayConfig
from pose_extraction.backends import DEFAULT_BACKEND, backends_help, pose_config_from_flags
from pose_extraction.filtering import VisibilityConfig
from pose_extraction.skeleton import SkeletonStyle

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample"
SAMPLE_PARQUET = SAMPLE_DIR / "laion_sample.parquet"
SAMPLE_OUTPUT = Path("outputs") / "laion_pose_sample"



def _bool(text: str) -> bool:
    if text.lower() in ("true", "yes", "1"):
        return True
    if text.lower() in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


# (flag, dest, type, help) per config section; dest is the dataclass field name.
_INPUT = [
    ("--input", "path", str, "parquet file, glob or folder (any fsspec URL); default: the bundled sample"),
    ("--url-column", "url_column", str, "URL column (default URL)"),
    ("--caption-column", "caption_column", str, "caption column (default TEXT)"),
    ("--carry-columns", "carry_columns", lambda s: tuple(c for c in s.split(",") if c),
     "comma-separated columns copied into the index (default: all others)"),
    ("--shard-size", "shard_size", int, "input rows per shard (default 1000)"),
    ("--url-base", "url_base", str, "base URL for relative URLs"),
    ("--limit", "limit", int, "use only the first N rows"),
]
_DOWNLOAD = [
    ("--image-size", "image_size", int, "resize target in pixels (default 512)"),
    ("--resize-mode", "resize_mode", str, "img2dataset resize mode (default keep_ratio)"),
    ("--min-image-size", "min_image_size", int, "smaller images are image_too_small (default 64)"),
    ("--max-image-area", "max_image_area", int, "images with more pixels are image_too_large (default: PIL's bomb limit)"),
    ("--timeout", "timeout", float, "seconds a connect or read may wait for data (default 10)"),
    ("--image-deadline", "image_deadline", float, "seconds one image may take in all, redirects and retries included (default 60)"),
    ("--max-image-bytes", "max_image_bytes", int, "bytes one downloaded image may have (default 33554432 = 32 MiB)"),
    ("--retries", "retries", int, "extra attempts per URL (default 1)"),
    ("--download-threads", "thread_count", int, "concurrent fetches per shard (default 32)"),
    ("--user-agent-token", "user_agent_token", str, "token in the User-Agent, matched by X-Robots-Tag"),
    ("--encode-quality", "encode_quality", int, "JPEG quality of re-encoded images (default 95)"),
    ("--keep-fitting-jpeg", "keep_fitting_jpeg", _bool,
     "store a complete JPEG that needs no resize as downloaded (default true; false: re-encode every image)"),
]
_POSE = [  # options of the chosen backend; a flag its config does not have is refused
    ("--device", "device", str, "torch device for mmpose: auto, cpu, cuda, cuda:1 ..."),
    ("--pose-config", "pose_config", str, "mmpose pose model config (zoo name or path)"),
    ("--pose-checkpoint", "pose_checkpoint", str, "mmpose pose weights (path or URL)"),
    ("--det-config", "det_config", str, "mmdet person detector config (zoo name or path)"),
    ("--det-checkpoint", "det_checkpoint", str, "mmdet detector weights (path or URL)"),
    ("--det-score-threshold", "det_score_threshold", float, "person boxes at or below this are dropped"),
    ("--pose-batch-size", "batch_size", int, "person crops per pose forward pass"),
]
_RESOURCES = [
    ("--pose-workers", "pose_workers", int, "pose actors (default: one per GPU, or what the CPUs hold)"),
    ("--pose-cpus", "pose_cpus", float, "CPUs per pose actor (default 1)"),
    ("--pose-gpus", "pose_gpus", float, "GPUs per pose actor (default: 1 if the cluster has GPUs)"),
    ("--download-workers", "download_workers", int, "download actors (default: what the CPUs hold, <= 2 per pose worker)"),
    ("--download-cpus", "download_cpus", float, "CPUs per download actor (default 0.5)"),
    ("--prefetch-shards", "prefetch_shards", int, "shards downloaded ahead per pose worker (default 1)"),
    ("--max-retries", "max_retries", int, "retries of a failed shard task / crashed actor (default 2)"),
]
_RAY = [
    ("--ray-address", "address", str, "Ray cluster (default: the one of `ray job submit`, else a new local Ray)"),
    ("--num-cpus", "num_cpus", int, "CPUs of a local Ray"),
    ("--num-gpus", "num_gpus", int, "GPUs of a local Ray"),
    ("--ray-temp-dir", "temp_dir", str, "session folder of a local Ray"),
]


def _add(parser: argparse.ArgumentParser, title: str, flags) -> None:
    _add_to(parser.add_argument_group(title), flags)


def _add_to(group, flags) -> None:
    for flag, dest, kind, text in flags:
        group.add_argument(flag, dest=dest, type=kind, default=None, help=text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="build_laion_pose.py",
        description="Build LAION-Pose: download LAION images with img2dataset, estimate poses, keep images with "
        "enough visible keypoints, write WebDataset shards + parquet index + stats. Resumable. "
        "Without arguments: the bundled sample into outputs/laion_pose_sample.",
    )
    parser.add_argument("--output", default=None, help="output folder (bundled sample: outputs/laion_pose_sample)")
    parser.add_argument("--log-level", default="INFO", help="logging level")
    _add(parser, "input", _INPUT)
    _add(parser, "download", _DOWNLOAD)
    access = parser.add_argument_group("url access")
    access.add_argument(
        "--allow-private-urls", action="store_true", default=None, help="allow file:// and private/loopback hosts"
    )
    access.add_argument(
        "--allow-file-root", dest="allowed_file_roots", action="append", default=None,
        help="allow file:// URLs under this folder (repeatable)",
    )
    access.add_argument(
        "--allow-host", dest="allowed_hosts", action="append", default=None,
        help="fetch this host (NAME or NAME:PORT) even when it resolves to a private address (repeatable)",
    )
    access.add_argument("--ignore-robots-tag", action="store_true", help="fetch images whose X-Robots-Tag opts out")
    pose_group = parser.add_argument_group("pose")
    pose_group.add_argument("--pose-backend", default=None, help=f"{backends_help()} (default {DEFAULT_BACKEND})")
    _add_to(pose_group, _POSE)
    pose = parser.add_argument_group("keep rule")
    pose.add_argument("--max-persons", type=int, default=None, help="people per image (detector boxes / MediaPipe passes)")
    pose.add_argument("--allow-random-weights", action="store_true", default=None, help="mmpose without checkpoints (tests only)")
    pose.add_argument("--keypoint-threshold", type=float, help="a keypoint is visible above this score (default 0.3)")
    pose.add_argument(
        "--min-visible-fraction", type=float, help="keep when someone has more than this share of 17 keypoints visible (0.5)"
    )
    pose.add_argument("--images-per-call", type=int, default=None, help="images per estimator call (default 16)")
    _add(parser, "resources", _RESOURCES)
    _add(parser, "ray", _RAY)
    return parser


def _given(args: argparse.Namespace, flags) -> dict:
    return {dest: getattr(args, dest) for _, dest, _, _ in flags if getattr(args, dest) is not None}


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def config_from_args(args: argparse.Namespace) -> JobConfig:
    """The :class:`JobConfig` the parsed flags describe (the bundled sample when ``--input`` is absent)."""
    inputs = _given(args, _INPUT)
    download = _given(args, _DOWNLOAD)
    roots = tuple(_absolute(r) for r in (args.allowed_file_roots or ()))
    if "path" not in inputs:
        inputs["path"] = str(SAMPLE_PARQUET)
        inputs.setdefault("url_base", SAMPLE_DIR.as_uri() + "/")
        roots += (str(SAMPLE_DIR),)
        output = args.output or str(SAMPLE_OUTPUT)
    elif args.output is None:
        raise ValueError("--output is required with --input")
    else:
        output = args.output
    inputs["path"] = _absolute(inputs["path"])
    download.update(allowed_file_roots=roots, honour_robots_tag=not args.ignore_robots_tag)
    if args.allowed_hosts:
        download["allowed_hosts"] = tuple(args.allowed_hosts)
    if args.allow_private_urls:
        download["allow_private_urls"] = True
    pose = {flag: ((dest,), getattr(args, dest)) for flag, dest, _, _ in _POSE if getattr(args, dest) is not None}
    if args.max_persons is not None:
        pose["--max-persons"] = (("max_persons", "det_max_persons"), args.max_persons)
    if args.allow_random_weights:
        pose["--allow-random-weights"] = (("allow_random_weights",), True)
    visibility = {
        name: getattr(args, name) for name in ("keypoint_threshold", "min_visible_fraction") if getattr(args, name) is not None
    }
    stage = PoseStageConfig(
        pose=pose_config_from_flags(args.pose_backend or DEFAULT_BACKEND, pose),
        visibility=VisibilityConfig(**visibility),
        skeleton=SkeletonStyle(**({"threshold": args.keypoint_threshold} if args.keypoint_threshold is not None else {})),
        **({"images_per_call": args.images_per_call} if args.images_per_call is not None else {}),
    )
    return JobConfig(
        input=InputConfig(**inputs),
        output=_absolute(output),
        download=DownloadConfig(**download),
        stage=stage,
        resources=ResourcesConfig(**_given(args, _RESOURCES)),
        ray=RayConfig(**_given(args, _RAY)),
    )


def main(argv: list[str] | None = None) -> int:
    """Run the job; exit code 0 when every shard is finished, 1 when some failed (rerun resumes), 2 on bad input,
    130 when interrupted (Ctrl-C)."""
    from pipelines.laion_pose.job import run_job

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except ValueError as err:
        parser.error(str(err))
    try:
        totals = run_job(config)
    except (ValueError, FileNotFoundError) as err:
        logging.getLogger("build_laion_pose").error("%s", err)
        return 2
    except KeyboardInterrupt:  # the actors are stopped and the output lock released on the way out
        logging.getLogger("build_laion_pose").error("interrupted: finished shards are kept; rerun the same command to resume")
        return 130
    print(f"LAION-Pose in {config.output}: {totals['input_rows']} input rows, counts {totals['counts']}")
    return 0 if totals["complete"] else 1
