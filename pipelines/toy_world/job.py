"""Run a toy-world build: the shard sets (in parallel processes if asked), then the held-out set; resumable.

A rerun of the same command skips finished shards (``NNNNN.stats.json`` present)
and a complete evaluation set (``eval/spec.json`` present), and removes what a killed
run left half-written. A rerun with settings that change the content is refused: the
folder's ``config.json`` says what it holds. The output folder is checked and locked
first (:mod:`datasets.output_folder`): a file, an unwritable folder or a folder another
build is writing is refused before anything is drawn.
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from datasets import clips, laion_pose
from datasets.output_folder import OutputLock, prepare_output_folder
from datasets.shards import (
    ProgressLogger, aggregate_stats, finished_shards, remove_partial_files, shard_stem, write_json_atomic,
)  # fmt: skip
from pipelines.toy_world.config import GENERATOR, RUNTIME_FIELDS, ToyWorldConfig
from pipelines.toy_world.heldout import write_eval_set
from pipelines.toy_world.writers import BUILDERS

log = logging.getLogger(__name__)
CONFIG_NAME = "config.json"
SETS = {
    "images": ("images", "images_per_shard", laion_pose.STATUSES, laion_pose.KEPT),
    "clips": ("clips", "clips_per_shard", clips.STATUSES, clips.KEPT),
}
"""Shard set (sub-folder) -> (count field, per-shard field, statuses, kept status)."""


def check_resume(output: Path, config: ToyWorldConfig) -> None:
    """Raise ValueError when ``output`` holds a toy world written with other content settings; else record ours."""
    import json

    path = output / CONFIG_NAME
    if path.exists():
        try:
            previous = dict(json.loads(path.read_text()))
        except (ValueError, TypeError) as error:
            raise ValueError(f"{path} is not a toy-world config ({error}): use a new folder") from None
        ours = json.loads(json.dumps(config.content_fields()))  # tuples become lists, as in the file
        changed = sorted(k for k in set(ours) | set(previous) if k not in RUNTIME_FIELDS and previous.get(k) != ours.get(k))
        if changed:
            raise ValueError(f"{output} holds a toy world built with other settings ({', '.join(changed)}): use a new folder")
    output.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, config.to_dict())


def _build(name: str, config: ToyWorldConfig, shard: int, directory: str) -> dict:
    return BUILDERS[name](config, shard, directory)


def run_shard_set(config: ToyWorldConfig, name: str) -> dict:
    """Write the missing shards of set ``name`` (``images`` or ``clips``) and return its totals."""
    count_field, per_field, statuses, kept = SETS[name]
    directory = Path(config.output) / name
    directory.mkdir(parents=True, exist_ok=True)
    remove_partial_files(directory)
    write_json_atomic(directory / CONFIG_NAME, config.to_dict())
    total = math.ceil(getattr(config, count_field) / getattr(config, per_field))
    done = finished_shards(directory)
    todo = [i for i in range(total) if shard_stem(i) not in done]
    progress = ProgressLogger(total, kept_status=kept, unit=name, logger=log)
    progress.skip(total - len(todo))
    if config.workers == 1 or len(todo) <= 1:
        for shard in todo:
            progress.update(_build(name, config, shard, str(directory)))
    else:
        with ProcessPoolExecutor(min(config.workers, len(todo)), mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_build, name, config, shard, str(directory)) for shard in todo]
            for future in as_completed(futures):
                progress.update(future.result())
    return aggregate_stats(directory, statuses=statuses, extra={"generator": GENERATOR})


def run(config: ToyWorldConfig) -> dict:
    """Build (or finish building) the toy world of ``config``; returns a summary per part."""
    if not config.output:
        raise ValueError("an output folder is required")
    output = prepare_output_folder(config.output)
    with OutputLock(output):
        return _build_world(output, config)


def _build_world(output: Path, config: ToyWorldConfig) -> dict:
    check_resume(output, config)
    started = time.monotonic()
    summary = {}
    for name in SETS:
        if getattr(config, SETS[name][0]) > 0:
            totals = run_shard_set(config, name)
            summary[name] = {"shards": totals["shards"], "samples": totals["counts"].get(SETS[name][3], 0)}
    spec = write_eval_set(config, output / "eval")
    summary["eval"] = {"entries": len(spec["entries"]), "held_out_pairs": spec["held_out_pairs"]}
    summary["elapsed_s"] = round(time.monotonic() - started, 2)
    return summary
