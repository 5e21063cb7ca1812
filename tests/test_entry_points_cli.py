"""Every entry point's command line comes from its config dataclass through datasets.cli: ``--help`` lists every
field and ``--config``; a YAML file sets nested values that flags override (the three tools converted last)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from datasets import cli


def _laion_command():
    from pipelines.laion_pose.config import CommandConfig

    return CommandConfig


def _video_command():
    from pose_extraction.video_cli import CommandConfig

    return CommandConfig


def _eval_command():
    from evaluation.config import CommandConfig

    return CommandConfig


def _stage(number):
    def config():
        from training.entry import STAGE_CONFIGS

        return STAGE_CONFIGS[number]

    return config


def _attribute(module, name):
    return lambda: getattr(importlib.import_module(module), name)


ENTRY_POINTS = {
    "training.stage0": _stage(0),
    "training.stage1": _stage(1),
    "training.stage2": _stage(2),
    "training.generate": _attribute("training.generate", "GenerateConfig"),
    "training.convert_official": _attribute("training.convert_official", "ConvertConfig"),
    "pipelines.build_laion_pose": _laion_command,
    "pipelines.build_hdvila_clips": _attribute("pipelines.hdvila.config", "HdvilaConfig"),
    "pipelines.build_toy_world": _attribute("pipelines.toy_world.config", "ToyWorldConfig"),
    "pose_extraction.video": _video_command,
    "evaluation.run": _eval_command,
    "pipelines.build_hdvila_clips recaption": _attribute("pipelines.hdvila.config", "RecaptionConfig"),
    "benchmarks.bench_model": _attribute("benchmarks.bench_model", "BenchConfig"),
    "benchmarks.bench_generation": _attribute("benchmarks.bench_generation", "Settings"),
    "benchmarks.bench_generation_memory": _attribute("benchmarks.bench_generation_memory", "BenchConfig"),
    "benchmarks.bench_hdvila": _attribute("benchmarks.bench_hdvila", "CutBenchConfig"),
    "benchmarks.bench_captioning": _attribute("benchmarks.bench_captioning", "CaptionBenchConfig"),
    "benchmarks.bench_pose": _attribute("benchmarks.bench_pose", "PoseBenchConfig"),
    "benchmarks.bench_training": _attribute("benchmarks.bench_training", "TrainingBenchConfig"),
    "benchmarks.bench_evaluation": _attribute("benchmarks.bench_evaluation", "EvaluationBenchConfig"),
    "benchmarks.bench_laion_pose": _attribute("benchmarks.bench_laion_pose", "LaionBenchConfig"),
    "benchmarks.toy_table": _attribute("benchmarks.toy_table", "TableConfig"),
}
"""Every command users run (``MODULE SUBCOMMAND`` for a subcommand), with its config class."""


@pytest.mark.parametrize("module", sorted(ENTRY_POINTS))
def test_help_lists_config_and_every_field(module, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    name, *subcommand = module.split()
    with pytest.raises(SystemExit) as exit_:
        importlib.import_module(name).main([*subcommand, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    flags = [f"--{leaf.path.replace('_', '-')}" for leaf in cli.leaves(ENTRY_POINTS[module]())]
    assert "--config" in text and flags
    assert [flag for flag in flags if flag not in text] == []


def _yaml(tmp_path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_laion_pose_config_file_then_flags(tmp_path):
    from pipelines.laion_pose.cli import parse_config

    path = _yaml(tmp_path, "download: {timeout: 3.5, retries: 4}\npose: {backend: mmpose, allow_random_weights: true}\n")
    config = parse_config(["--config", path, "--retries", "2", "--allow-file-root", "a", "--allow-file-root", "b"])
    assert config.download.timeout == 3.5 and config.download.retries == 2
    assert config.stage.pose.backend == "mmpose" and config.stage.pose.options.allow_random_weights
    assert config.download.allowed_file_roots[:2] == (str(Path.cwd() / "a"), str(Path.cwd() / "b"))


def test_video_config_file_then_flags(tmp_path):
    from pose_extraction.video_cli import parse_command

    path = _yaml(tmp_path, "video: v.mp4\nout: o\nstyle: {threshold: 0.4, draw_keypoints: false}\npose: {max_persons: 2}\n")
    command = parse_command(["--config", path, "--threshold", "0.5", "--size", "0"])
    config = command.to_video_config()
    assert command.video == "v.mp4" and config.style.threshold == 0.5 and not config.style.draw_keypoints
    assert config.pose.options.max_persons == 2 and config.size is None


def test_evaluation_config_file_then_flags(tmp_path):
    from evaluation.run import parse_command, to_eval_config

    path = _yaml(tmp_path, "videos: v\nmetrics: [clip, pose_ap]\nbootstrap: 10\npose: {backend: mmpose, max_persons: 2}\n")
    config = to_eval_config(parse_command(["--config", path, "--det-max-persons", "3", "--device", "cpu"]))
    assert config.metrics == ("clip", "pose_ap") and config.bootstrap == 10
    assert config.pose.options.det_max_persons == 3 and config.pose.options.device == "cpu"
    with pytest.raises(ValueError, match="choose exactly one of --videos"):
        parse_command(["--config", path, "--compare", "a", "b"])
