"""The one command line every entry point is built from (datasets/cli.py): config files, presets, the spellings
users already type, one-line errors, and help from the dataclass docstrings."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Literal

import pytest

from datasets import cli
from training.config import ConfigError, save_config
from training.entry import parse_config
from training.presets import preset


@dataclass(frozen=True, kw_only=True)
class Optim:
    lr: float = 1e-4
    """Learning rate of the optimiser."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam betas."""

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


@dataclass(frozen=True, kw_only=True)
class Job:
    """A job with every kind of field the toolkit's configs use."""

    output: str = field(default="", metadata={"alias": "out"})
    """Where results go."""
    steps: int = 10
    """How many steps."""
    ema: bool = False
    """Keep an average."""
    flip: bool = True
    """Flip images."""
    revision: str | None = "main"
    """Hub revision."""
    sizes: tuple[int, ...] = (64,)
    """Sizes to try."""
    kind: Literal["fast", "exact"] = "exact"
    """How to cut."""
    options: dict | None = None
    """Backend options, a JSON object."""
    optim: Optim = Optim()
    """Optimiser."""


def parse(argv, **kwargs) -> Job:
    return cli.parse(Job, argv, prog="job", **kwargs)


def test_flags_in_every_spelling_users_type():
    job = parse([
        "--out", "/o", "--optim.lr", "0.5", "--betas", "0.8", "0.9", "--ema", "--no-flip", "--revision", "none",
        "--sizes", "32", "48", "--kind=fast", "--options", '{"max_persons": 2}', "--steps", "-0",
    ])  # fmt: skip
    assert (job.output, job.optim.lr, job.optim.betas, job.ema, job.flip) == ("/o", 0.5, (0.8, 0.9), True, False)
    assert (job.revision, job.sizes, job.kind, job.options, job.steps) == (None, (32, 48), "fast", {"max_persons": 2}, 0)
    assert parse(["--ema", "yes", "--flip", "false", "--optim.lr", "2"]) == Job(ema=True, flip=False, optim=Optim(lr=2.0))
    assert parse(["--old-steps", "3", "-q"], renamed={"--old-steps": "steps", "-q": "ema"}) == Job(steps=3, ema=True)
    assert parse(["--sizes", "8", "--steps", "2", "--sizes", "16", "24"]).sizes == (8, 16, 24)  # a repeated list option adds up


def test_config_files_nest_like_the_dataclasses_and_flags_override_them(tmp_path):
    first = tmp_path / "first.yaml"
    first.write_text("steps: 3\noptim:\n  lr: 0.25\n  betas: [0.5, 0.6]\nflip: false\noptions: {a: 1}\nrevision: null\n")
    second = tmp_path / "second.json"
    second.write_text(json.dumps({"steps": 4, "out": "/from-file"}))
    job = parse(["--config", str(first), "--config", str(second), "--optim.lr", "0.75"])
    assert job == Job(steps=4, output="/from-file", flip=False, options={"a": 1}, revision=None, optim=Optim(lr=0.75, betas=(0.5, 0.6)))


def test_presets_pick_the_defaults_from_a_flag_or_a_file(tmp_path):
    presets = {"default": {}, "quick": {"steps": 1, "optim": {"lr": 0.5}}}
    assert parse([], presets=presets, default_preset="default") == Job()
    assert parse(["--preset", "quick", "--steps", "2"], presets=presets) == Job(steps=2, optim=Optim(lr=0.5))
    (tmp_path / "c.yaml").write_text("profile: quick\n")
    assert parse(["--config", str(tmp_path / "c.yaml")], presets=presets, preset_flag="--profile").steps == 1


def test_a_saved_training_config_is_a_config_file(tmp_path):
    """What a run saved beside its outputs (config.json) gives back the same config, with any flag on top."""
    changed = replace(preset(2, "paper"), output_dir="/o", max_steps=7)
    changed = replace(changed, optim=replace(changed.optim, lr=2e-5), data=replace(changed.data, root="/clips"))
    path = save_config(changed, tmp_path / "config.json")
    assert parse_config(["--config", str(path)], stage=2, prog="stage2", description="") == changed
    again = parse_config(["--config", str(path), "--max-steps", "9"], stage=2, prog="stage2", description="")
    assert again == replace(changed, max_steps=9)


@pytest.mark.parametrize(
    ("argv", "file_text", "needle"),
    [
        (["--stepz", "3"], None, "unrecognized arguments: --stepz 3"),
        (["--kind", "slow"], None, "argument --kind: invalid choice 'slow' (choose from fast, exact)"),
        (["--steps", "many"], None, "--steps"),
        (["--optim.lr", "-1"], None, "lr must be positive, got -1.0"),
        ([], "optim:\n  learning_rate: 1\n", "unrecognized arguments: --optim.learning_rate 1"),
        ([], "- a list\n", "must hold a mapping of option names to values, not list"),
        ([], "steps: [unclosed\n", "is not valid YAML"),
        ([], '{"schema_version": 1, "job": {"steps": 2}}', "records a run but not its command's settings"),
        (["--preset", "huge"], None, "unknown preset 'huge'; valid: default"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, file_text, needle):
    if file_text is not None:
        (tmp_path / "c.yaml").write_text(file_text)
        argv = [*argv, "--config", str(tmp_path / "c.yaml")]
    with pytest.raises(SystemExit) as stopped:
        parse(argv, presets={"default": {}}, default_preset="default")
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("job: error: "), err
    assert needle in err, err


def test_a_run_record_gives_its_commands_settings(tmp_path):
    """A builder's config.json records a run (resume signature and all) with the command's settings under ``config``."""
    (tmp_path / "config.json").write_text('{"kind": "x", "schema_version": 1, "job": {"a": 1}, "config": {"steps": 2}}')
    assert parse(["--config", str(tmp_path / "config.json")]) == Job(steps=2)


def test_the_clip_builders_run_record_is_a_config_file(tmp_path):
    from pipelines.hdvila.config import PROFILES, HdvilaConfig
    from pipelines.hdvila.job import check_and_write_config

    options = dict(prog="build_hdvila_clips.py", description="", presets=PROFILES, preset_flag="--profile", default_preset="default")
    argv = ["--source.metadata", "/m.jsonl", "--source.videos", "/v", "--output", "/o", "--cut.crf", "30", "--profile", "train512-8fps"]
    config = cli.parse(HdvilaConfig, argv, **options)
    check_and_write_config(config, tmp_path)
    assert cli.parse(HdvilaConfig, ["--config", str(tmp_path / "config.json")], **options) == config


def test_a_missing_config_file_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse(["--config", str(tmp_path / "absent.yaml")])
    assert capsys.readouterr().err.strip() == f"job: error: cannot read config file {tmp_path / 'absent.yaml'}: No such file or directory"


def test_a_config_check_can_raise_for_the_caller():
    with pytest.raises(ConfigError, match="lr must be positive"):
        parse_config(["--lr", "-1"], stage=1, prog="stage1", description="")


def test_help_lists_every_field_with_its_default_and_docstring(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as stopped:
        parse(["--help"])
    text = capsys.readouterr().out
    assert stopped.value.code == 0 and "--config FILE.yaml" in text
    for leaf in cli.leaves(Job):
        assert "--" + leaf.path.replace("_", "-") in text, leaf.path
    assert "Learning rate of the optimiser. (default: 0.0001)" in text and "How to cut. (default: exact)" in text
