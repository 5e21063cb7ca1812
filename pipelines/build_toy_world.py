"""Draw the toy world: posed humanoid figures in named colours, for training and evaluating at toy scale on a CPU.

    python -m pipelines.build_toy_world --output toy/ [--preset default|feasibility32|smoke] [--size 64]
        [--images 4096] [--clips 512] [--eval-videos 32] [--seed 0] [--workers 2]

Writes ``toy/images/`` (LAION-Pose shards: ``python -m training.stage1 --data toy/images``),
``toy/clips/`` (clip shards: ``python -m training.stage2 --data toy/clips``), ``toy/eval/``
(held-out pose sequences, oracle videos and ``spec.json``; see
:mod:`pipelines.toy_world.heldout`) and ``toy/config.json``. Rerun the same command to
resume. ``--help`` lists every flag; ``--config FILE.yaml`` sets any of them from a file.
"""

from __future__ import annotations

import logging
import sys


def main(argv: list[str] | None = None) -> int:
    from datasets import cli
    from pipelines.toy_world.config import PRESETS, ToyWorldConfig
    from pipelines.toy_world.job import run

    config = cli.parse(
        ToyWorldConfig, argv, prog="python -m pipelines.build_toy_world", description=__doc__, presets=PRESETS,
        default_preset="default", renamed={"-v": "verbose"},
    )
    if not config.output:
        print("python -m pipelines.build_toy_world: error: --output DIR is required", file=sys.stderr)
        return 2
    if not logging.getLogger().handlers:
        level = logging.DEBUG if config.verbose else logging.INFO
        logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s")
    try:
        summary = run(config)
    except ValueError as error:
        logging.getLogger("build_toy_world").error("%s", error)
        return 2
    parts = ", ".join(f"{name}: {value}" for name, value in summary.items())
    print(f"toy world in {config.output}: {parts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
