"""Evaluate generated videos the way the paper's Table 1 does, and write a report.

    python -m evaluation.run --videos DIR --metrics clip,pose_ap,frame_consistency --out DIR \\
        [--clip-model ID_OR_PATH] [--pose-backend mmpose|mediapipe]
    python -m evaluation.run --spec SPEC --model DIR --out DIR ...   (generate first, then evaluate)
    python -m evaluation.run --compare RUN_A RUN_B [...] [--out DIR] [--paper]
    python -m evaluation.run --list-metrics
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from evaluation.config import DEFAULT_METRICS, DTYPES, EvalConfig
from pose_extraction.backends import BACKENDS, DEFAULT_BACKEND, backends_help, pose_config_from_flags


# (flag, option of the chosen pose backend, type, help): refused when that backend has no such option.
_POSE_FLAGS = (
    ("--pose-config", "pose_config", str, "MMPose model config (name or file)"),
    ("--pose-checkpoint", "pose_checkpoint", str, "MMPose weights (local path)"),
    ("--det-config", "det_config", str, "MMDet person detector config (name or file)"),
    ("--det-checkpoint", "det_checkpoint", str, "MMDet weights (local path)"),
    ("--det-max-persons", "det_max_persons", int, "MMPose: person boxes kept per frame"),
)


def build_parser() -> argparse.ArgumentParser:
    defaults = EvalConfig()
    parser = argparse.ArgumentParser(prog="python -m evaluation.run", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--videos", type=Path, help="folder of generated videos (OUT.mp4 + OUT.pose.mp4 + OUT.json)")
    mode.add_argument("--spec", type=Path, help="generation spec (JSON/JSONL of prompt + pose entries): generate, then evaluate")
    mode.add_argument("--compare", nargs="+", type=Path, metavar="RUN", help="evaluation output folders to compare")
    mode.add_argument("--list-metrics", action="store_true", help="print the registered metrics and exit")
    parser.add_argument("--out", type=Path, help="output folder (results.json, report.html; compare.html with --compare)")
    parser.add_argument("--metrics", default=",".join(DEFAULT_METRICS), help="comma-separated metric names")
    parser.add_argument("--clip-model", default=defaults.clip_model, help="CLIP backbone: hub id or local folder")
    parser.add_argument("--device", default=defaults.device, help="torch device for CLIP and MMPose (auto: cuda if present)")
    parser.add_argument("--dtype", default=defaults.dtype, choices=DTYPES, help="CLIP forward dtype")
    parser.add_argument("--clip-batch-size", type=int, default=defaults.clip_batch_size)
    parser.add_argument("--pose-backend", default=DEFAULT_BACKEND, choices=sorted(BACKENDS), help=backends_help())
    for flag, _, kind, text in _POSE_FLAGS:
        parser.add_argument(flag, default=None, type=kind, help=text)
    parser.add_argument("--pose-extra", type=json.loads, default={}, metavar="JSON",
                        help="more options of the chosen backend as JSON, e.g. mmpose's {\"pose_cfg_options\": {...}}")
    parser.add_argument("--pose-batch-size", type=int, default=None,
                        help=f"frames per pose-estimator call (default {defaults.pose_frames_per_call}); also a "
                             f"backend's batch_size (MMPose: person crops per pass)")
    parser.add_argument("--pose-gt-threshold", type=float, default=defaults.pose_gt_threshold)
    parser.add_argument("--fvd-i3d", default=None, help="fvd: local TorchScript I3D (FVD cannot be computed without it)")
    parser.add_argument("--fvd-i3d-kwargs", type=json.loads, default={}, metavar="JSON", help="fvd: I3D call options")
    parser.add_argument("--fvd-reference", default=None, help="fvd: folder of real reference videos (*.mp4)")
    parser.add_argument("--fvd-frames", type=int, default=defaults.fvd_frames)
    parser.add_argument("--bootstrap", type=int, default=defaults.bootstrap, help="bootstrap resamples (0: no intervals)")
    parser.add_argument("--confidence", type=float, default=defaults.confidence)
    parser.add_argument("--seed", type=int, default=defaults.seed, help="bootstrap seed")
    parser.add_argument("--max-videos", type=int, default=None)
    parser.add_argument("--no-resume", action="store_true", help="ignore per-video states cached by an earlier run")
    parser.add_argument("--no-report", action="store_true", help="write results.json only")
    parser.add_argument("--model", type=Path, help="with --spec: the model folder to generate with")
    parser.add_argument("--generate-options", type=json.loads, default={}, metavar="JSON",
                        help='with --spec: generation fields that override every item\'s, e.g. \'{"pose_guidance": true}\'')
    parser.add_argument("--paper", action="store_true", help="with --compare: add the paper's Table 1 rows")
    parser.add_argument("--quiet", action="store_true", help="warnings only")
    return parser


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    from evaluation.metrics import check_metric_names

    names = tuple(n.strip() for n in args.metrics.split(",") if n.strip())
    given = {flag: ((option,), getattr(args, option)) for flag, option, _, _ in _POSE_FLAGS
             if getattr(args, option) is not None}  # fmt: skip
    if not isinstance(args.pose_extra, dict):
        raise ValueError("--pose-extra takes a JSON object of backend options")
    given.update({f"--pose-extra {key}": ((key,), value) for key, value in args.pose_extra.items()})
    shared = {"device": args.device, **({"batch_size": args.pose_batch_size} if args.pose_batch_size is not None else {})}
    pose = pose_config_from_flags(args.pose_backend, given, shared)
    per_call = {} if args.pose_batch_size is None else {"pose_frames_per_call": args.pose_batch_size}
    return EvalConfig(
        metrics=check_metric_names(names), clip_model=args.clip_model, device=args.device, dtype=args.dtype,
        clip_batch_size=args.clip_batch_size, pose=pose, pose_gt_threshold=args.pose_gt_threshold, **per_call,
        fvd_i3d=args.fvd_i3d, fvd_i3d_kwargs=args.fvd_i3d_kwargs, fvd_reference=args.fvd_reference,
        fvd_frames=args.fvd_frames, bootstrap=args.bootstrap, confidence=args.confidence, seed=args.seed, resume=not args.no_resume,
        report=not args.no_report, max_videos=args.max_videos,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _dispatch(parser, args)
    except (ValueError, OSError) as error:
        parser.exit(2, f"error: {error}\n")


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.list_metrics:
        from evaluation.metrics import METRICS, metric_names

        for name in metric_names():
            print(f"{name:22s} {METRICS[name].description}")
        return 0
    if args.compare:
        from evaluation.compare import compare_runs

        print(compare_runs(args.compare, out_dir=args.out or Path("."), paper=args.paper))
        return 0
    if args.out is None:
        parser.error("--out is required with --videos and --spec")
    from datasets.output_folder import prepare_output_folder
    from evaluation.metrics.clip_backbone import CLIP_METRICS
    from follow_your_pose.hub import check_reachable

    config = config_from_args(args)
    if any(name in CLIP_METRICS for name in config.metrics):
        check_reachable(config.clip_model, flag="--clip-model")
    prepare_output_folder(args.out, flag="--out")
    videos = args.videos
    if args.spec is not None:
        if args.model is None:
            parser.error("--spec needs --model (the model folder to generate with)")
        from evaluation.spec import generate_from_spec

        if not isinstance(args.generate_options, dict):
            parser.error("--generate-options takes a JSON object of generation fields")
        videos = generate_from_spec(args.spec, args.model, args.out / "generated", args.device, args.generate_options)
    return evaluate(videos, args.out, config)


def evaluate(videos: Path, out: Path, config: EvalConfig) -> int:
    """Score ``videos`` into ``out`` and write the report; prints the headline figures."""
    from evaluation.evaluator import evaluate_folder
    from evaluation.report import fmt, label, write_report

    results = evaluate_folder(videos, out, config)
    if config.report:
        report = write_report(results, out, preview_side=config.preview_side, preview_frames=config.preview_frames)
        print(f"report: {report}", file=sys.stderr)
    for metric in results["metrics"].values():
        for figure in metric["figures"]:
            ci = (metric["ci"] or {}).get(figure)
            interval = f"  [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else ""
            print(f"{label(figure):22s} {fmt(metric['aggregate'][figure]):>8s}{interval}  ({metric['videos']} videos)")
    counts = results["counts"]
    print(f"{counts['evaluated']} evaluated, {counts['rejected']} rejected; results: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
