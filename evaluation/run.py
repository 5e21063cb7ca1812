"""Evaluate generated videos the way the paper's Table 1 does, and write a report.

    python -m evaluation.run --videos DIR --metrics clip,pose_ap,frame_consistency --out DIR \\
        [--clip-model ID_OR_PATH] [--pose-backend mmpose|mediapipe]
    python -m evaluation.run --spec SPEC --model DIR --out DIR ...   (generate first, then evaluate)
    python -m evaluation.run --compare RUN_A RUN_B [...] [--out DIR] [--paper]
    python -m evaluation.run --list-metrics

``--help`` lists every option with its default; ``--config FILE.yaml`` sets any of them (flags override it).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from datasets import cli
from evaluation.config import CommandConfig, EvalConfig

PROG = "python -m evaluation.run"
RENAMED = {"--det-max-persons": "pose.max_persons"}
"""Flags of earlier versions -> the field they set (``--det-max-persons`` now fills MediaPipe's person cap too)."""


def parse_command(argv: list[str] | None = None) -> CommandConfig:
    """The command line as a :class:`CommandConfig`: ``--help`` lists every option, ``--config FILE.yaml`` sets any.
    A malformed flag exits 2 with one line; a value the config refuses (no mode, two modes) raises ValueError."""
    return cli.parse(CommandConfig, argv, prog=PROG, description=__doc__, renamed=RENAMED, config_error=ValueError)


def to_eval_config(command: CommandConfig) -> EvalConfig:
    """The :class:`EvalConfig` of a command, its metric names checked against the registry."""
    from evaluation.metrics import check_metric_names

    return command.to_eval_config(check_metric_names(command.metrics))


def main(argv: list[str] | None = None) -> int:
    try:
        command = parse_command(argv)
        if not logging.getLogger().handlers:
            level = logging.WARNING if command.quiet else logging.INFO
            logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
        return _dispatch(command)
    except (ValueError, OSError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def _dispatch(command: CommandConfig) -> int:
    if command.list_metrics:
        from evaluation.metrics import METRICS, metric_names

        for name in metric_names():
            print(f"{name:22s} {METRICS[name].description}")
        return 0
    if command.compare:
        from evaluation.compare import compare_runs

        print(compare_runs(list(command.compare), out_dir=command.out or Path("."), paper=command.paper))
        return 0
    if command.out is None:
        raise ValueError("--out is required with --videos and --spec")
    from datasets.output_folder import prepare_output_folder
    from evaluation.metrics.clip_backbone import CLIP_METRICS
    from datasets.hub import check_reachable

    config = to_eval_config(command)
    if any(name in CLIP_METRICS for name in config.metrics):
        check_reachable(config.clip_model, flag="--clip-model")
    prepare_output_folder(command.out, flag="--out")
    videos = command.videos
    if command.spec is not None:
        if command.model is None:
            raise ValueError("--spec needs --model (the model folder to generate with)")
        from evaluation.spec import generate_from_spec

        videos = generate_from_spec(command.spec, command.model, command.out / "generated", command.device, command.generate_options)
    return evaluate(videos, command.out, config)


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
