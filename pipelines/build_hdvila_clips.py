"""Cut HD-VILA-100M spans into WebDataset clip shards on Ray.

    python pipelines/build_hdvila_clips.py --metadata hdvila.jsonl --videos VIDEOS/ --output clips/ [--fps 8] [--size 512]

Writes ``clips/NNNNN.tar`` (``mp4`` + ``txt`` + ``json`` per clip),
``clips/NNNNN.parquet`` (one row per input clip, kept or not, with its status and
reason), ``clips/stats.json`` (input clips and a count per status) and
``clips/config.json``. Rerun the same command to resume. ``--help`` lists every
flag (``--profile train512|train512-8fps|fast-copy`` sets named defaults; ``--config FILE.yaml`` any option); the record format is documented in :mod:`datasets.clips`. On a cluster:
``ray job submit --working-dir . -- python pipelines/build_hdvila_clips.py ...``.
"""

from __future__ import annotations

import logging
import sys


RENAMED = {"--ray-address": "ray.address", "--ray-num-cpus": "ray.num_cpus", "--ray-temp-dir": "ray.temp_dir", "-v": "verbose"}
"""Flags of earlier versions, still accepted."""


def main(argv: list[str] | None = None) -> int:
    from datasets import cli
    from pipelines.hdvila.config import PROFILES, HdvilaConfig
    from pipelines.hdvila.job import ShardFailures, run

    config = cli.parse(
        HdvilaConfig, argv, prog="build_hdvila_clips.py", description=__doc__, presets=PROFILES, preset_flag="--profile",
        default_preset="default", renamed=RENAMED,
    )
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.DEBUG if config.verbose else logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        totals = run(config)
    except ShardFailures as error:
        logging.getLogger("build_hdvila_clips").error("%s", error)
        return 1
    except (ValueError, FileNotFoundError) as error:  # bad input or output, found before any work
        logging.getLogger("build_hdvila_clips").error("%s", error)
        return 2
    except KeyboardInterrupt:  # Ray and the output lock are released on the way out
        logging.getLogger("build_hdvila_clips").error("interrupted: finished shards are kept; rerun the same command to resume")
        return 130
    print(f"{totals['input_rows']} input clips in {totals['shards']} shard(s): {totals['counts']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
