"""What the two stage entry points share: parse, check, train, and turn failures into clear exits."""

from __future__ import annotations

import functools
import logging
import sys

from datasets import cli
from datasets.output_folder import OutputFolderError, prepare_output_folder
from training.config import ConfigError, Stage0Config, Stage1Config, Stage2Config

logger = logging.getLogger("training")


def _setup_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


STAGE_CONFIGS = {0: Stage0Config, 1: Stage1Config, 2: Stage2Config}


def parse_config(argv: list[str] | None, *, stage: int, prog: str, description: str):
    """The resolved config of a stage's command line: ``--preset`` (default ``tiny``), ``--config`` files, flags.

    Raises :class:`ConfigError` for an unknown preset or a value the config refuses; exits 2 on malformed flags."""
    from training.presets import preset

    return cli.parse(
        STAGE_CONFIGS[stage], argv, prog=prog, description=description, presets=functools.partial(preset, stage),
        default_preset="tiny", config_error=ConfigError,
    )


def run_stage(argv: list[str] | None, *, stage: int, stage_class, prog: str, description: str):
    """Run one stage from the command line. Bad configs, an unusable or locked output folder, damaged checkpoints
    and data past their limit exit with status 2 and one line; a non-finite loss with status 1 and a message
    naming the step; all before a bad step is applied."""
    from datasets.damage import DamagedDataError
    from training.loop import NonFiniteLossError, train

    _setup_logging()
    try:
        config = parse_config(argv, stage=stage, prog=prog, description=description)
        if not config.output_dir:
            raise ConfigError("--output DIR is required")
        prepare_output_folder(config.output_dir)
        return train(config, stage_class(config))
    except (ConfigError, OutputFolderError, DamagedDataError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    except NonFiniteLossError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(1) from error


def run_tool(argv: list[str] | None, *, defaults, run, prog: str, description: str, errors: tuple[type[BaseException], ...]) -> int:
    """A one-shot command (``training.generate``, ``training.convert_official``): flags from the ``defaults`` config's
    fields, ``run(config)`` on the result, its printed output; ``errors`` (bad input) end with one line and exit 2."""
    config = cli.parse(type(defaults), argv, prog=prog, description=description, defaults=defaults)
    try:
        if hasattr(config, "check_required"):  # a missing or malformed required flag is a usage error
            config.check_required()
    except (TypeError, ValueError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    _setup_logging()
    try:
        result = run(config)
    except errors as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    print(result)
    return 0
