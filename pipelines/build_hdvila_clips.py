"""Cut HD-VILA-100M spans into WebDataset clip shards on Ray.

    python pipelines/build_hdvila_clips.py --metadata hdvila.jsonl --videos VIDEOS/ --output clips/ [--fps 8] [--size 512]

Writes ``clips/NNNNN.tar`` (``mp4`` + ``txt`` + ``json`` per clip),
``clips/NNNNN.parquet`` (one row per input clip, kept or not, with its status and
reason), ``clips/stats.json`` (input clips and a count per status) and
``clips/config.json``. Rerun the same command to resume. ``--help`` lists every
flag (``--profile train512|train512-8fps|fast-copy`` sets named defaults; ``--config FILE.yaml`` any option); the record format is documented in :mod:`datasets.clips`. On a cluster:
``ray job submit --working-dir . -- python pipelines/build_hdvila_clips.py ...``.

``--caption-enabled`` captions every kept clip with a transformers model
(``--caption-model``, a hub id or local folder); ``recaption --clips CLIPS/
--output OUT/ [--write parquet]`` captions an existing clip folder without cutting
again (:mod:`pipelines.hdvila.recaption`).
"""

from __future__ import annotations

import logging
import sys


RENAMED = {"-v": "verbose"}
"""Short forms (``--ray-address``, ``--caption-enabled`` and other flat spellings of nested fields work as well)."""


def recaption(argv: list[str]) -> int:
    from datasets import cli
    from pipelines.hdvila.config import RecaptionConfig
    from pipelines.hdvila.recaption import run_recaption

    config = cli.parse(
        RecaptionConfig, argv, prog="build_hdvila_clips.py recaption", description=RecaptionConfig.__doc__, renamed=RENAMED
    )
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.DEBUG if config.verbose else logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    log = logging.getLogger("build_hdvila_clips")
    try:
        totals = run_recaption(config)
    except (ValueError, FileNotFoundError) as error:  # bad input or output, found before any work
        log.error("%s", error)
        return 2
    except RuntimeError as error:  # some shards failed; the others are kept
        log.error("%s", error)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted: finished shards are kept; rerun the same command to resume")
        return 130
    print(f"{totals['input_rows']} clips in {totals['shards']} shard(s): {totals['counts']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["recaption"]:
        return recaption(argv[1:])
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
