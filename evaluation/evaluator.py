"""Score a folder of generated videos with the chosen metrics and write ``results.json``.

Per video, each metric's state is cached under ``OUT/states/<metric>/<key>.json``
(written through a temporary name) with a fingerprint of the metric settings
and of the files, so a stopped run resumes and a changed file or setting is
scored again. A video that cannot be read becomes a rejection row with its
reason; a video one metric cannot score is skipped by that metric only. Both
are listed in the results, never dropped silently.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from datasets import atomic
from datasets.generated import read_record, sidecar_paths
from evaluation.config import EvalConfig
from evaluation.metrics import MetricContext, build_metrics
from evaluation.sample import SampleError, load_sample, scan_videos, video_key

RESULTS_NAME = "results.json"
RESULTS_KIND = "evaluation_results"
RESULTS_VERSION = 1
log = logging.getLogger(__name__)


def evaluate_folder(videos_dir: str | Path, out_dir: str | Path, config: EvalConfig, context: MetricContext | None = None) -> dict:
    """Score every generated video of ``videos_dir``; writes and returns the results (see module doc).

    A ``context`` passed in (to share loaded models between runs) stays open; one made here is closed.
    """
    if context is None:
        with MetricContext(config) as own:
            return evaluate_folder(videos_dir, out_dir, config, own)
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = scan_videos(videos_dir)[: config.max_videos]
    metrics = build_metrics(config.metrics, context)
    cache = StateCache(out_dir / "states")
    rows, rejected = [], []
    progress = tqdm(paths, desc="evaluating", unit="video")
    for path in progress:
        progress.set_postfix_str(path.name, refresh=False)
        try:
            states = _score_video(path, metrics, cache, config.resume, context)
        except SampleError as error:
            log.warning("rejected %s: %s", path.name, error)
            rejected.append({"key": video_key(path), "path": str(path), "reason": str(error)})
            continue
        rows.append({"path": path, "record": read_record(path), "states": states})
    if not rows:
        reasons = "; ".join(f"{r['key']}: {r['reason']}" for r in rejected[:5])
        raise SampleError(f"none of the {len(paths)} videos in {videos_dir} could be evaluated ({reasons})")
    results = assemble_results(rows, rejected, metrics, context, config, Path(videos_dir))
    write_json(out_dir / RESULTS_NAME, results)
    return results


def _score_video(path: Path, metrics, cache: "StateCache", resume: bool, context: MetricContext) -> dict[str, dict]:
    key = video_key(path)
    prints = {m.name: fingerprint(m, path) for m in metrics}
    states = {m.name: cache.get(m.name, key, prints[m.name]) if resume else None for m in metrics}
    missing = [m for m in metrics if states[m.name] is None]
    if not missing:
        return states
    with context.timed("decode"):
        sample = load_sample(path)
    for metric in missing:
        metric.prepare()  # a model that cannot load stops the run here, with its reason, instead of skipping every video
    for metric in missing:
        try:
            state = metric.safe_update(sample)
        except Exception as error:  # one metric failing on one video must not lose the others
            log.exception("%s failed on %s", metric.name, path.name)
            states[metric.name] = {"skipped": f"{metric.name} failed: {type(error).__name__}: {error}"}
            continue
        cache.put(metric.name, key, prints[metric.name], state)
        states[metric.name] = state
    return states


def fingerprint(metric, path: Path) -> str:
    """Changes when the metric's settings, its other inputs (weight files) or any file of the generated video change."""
    parts = {"metric": metric.name, "settings": metric.settings(), "files": []}
    inputs = metric.cache_inputs()
    if inputs:  # only where there are some, so other metrics keep the cache keys of earlier runs
        parts["inputs"] = inputs
    for file in (path, *sidecar_paths(path)):
        if file.exists():
            stat = file.stat()
            parts["files"].append([file.name, stat.st_size, stat.st_mtime_ns])
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class StateCache:
    """Per-video metric states on disk, keyed by metric and video key, valid for one fingerprint."""

    def __init__(self, root: Path):
        self.root = root

    def _path(self, metric: str, key: str) -> Path:
        return self.root / metric / f"{key}.json"

    def get(self, metric: str, key: str, fingerprint_: str) -> dict | None:
        path = self._path(metric, key)
        if not path.exists():
            return None
        try:
            cached = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return cached["state"] if cached.get("fingerprint") == fingerprint_ else None

    def put(self, metric: str, key: str, fingerprint_: str, state: dict) -> None:
        path = self._path(metric, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {"fingerprint": fingerprint_, "state": state}, indent=None)


def assemble_results(rows, rejected, metrics, context, config: EvalConfig, videos_dir: Path) -> dict:
    """The ``results.json`` document: settings, per-metric aggregates with intervals, per-video rows."""
    summary = {}
    for metric in metrics:
        scored = [r["states"][metric.name] for r in rows if "skipped" not in r["states"][metric.name]]
        summary[metric.name] = {
            "figures": list(metric.figures),
            "higher_is_better": metric.higher_is_better,
            "description": metric.description,
            "settings": metric.settings(),
            "videos": len(scored),
            "skipped": sum(1 for r in rows if "skipped" in r["states"][metric.name]),
        }
        with context.timed(f"compute/{metric.name}"):
            summary[metric.name]["aggregate"] = metric.compute(scored) if scored else {f: None for f in metric.figures}
        with context.timed(f"bootstrap/{metric.name}"):
            summary[metric.name]["ci"] = confidence_intervals(metric, scored, config)
    records = [r["record"] for r in rows]
    backbone = {"model": config.clip_model}
    if context.clip_loaded:
        backbone = context.clip.describe()
    return {
        "schema": RESULTS_KIND,
        "schema_version": RESULTS_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "videos_dir": str(videos_dir.resolve()),
        "config": config.to_json(),
        "clip_backbone": backbone,
        "model_ids": sorted({str(r.get("model")) for r in records}),
        "data_ids": sorted({str(r.get("pose_source")) for r in records if r.get("pose_source")}),
        "counts": {"videos": len(rows) + len(rejected), "evaluated": len(rows), "rejected": len(rejected)},
        "metrics": summary,
        "videos": [_video_row(r, metrics) for r in rows],
        "rejected": rejected,
        "timings": {k: round(v, 4) for k, v in sorted(context.timings.items())},
    }


def _video_row(row: dict, metrics) -> dict:
    record, path = row["record"], row["path"]
    pose_path = sidecar_paths(path)[0]
    values, skipped = {}, {}
    for metric in metrics:
        state = row["states"][metric.name]
        if "skipped" in state:
            skipped[metric.name] = state["skipped"]
            values.update({f: None for f in metric.figures})
        else:
            values.update(state["values"])
    return {
        "key": video_key(path),
        "path": str(path.resolve()),
        "pose_path": str(pose_path.resolve()) if pose_path.exists() else None,
        **{k: record.get(k) for k in ("prompt", "model", "pose_source", "frames", "width", "height", "fps", "settings")},
        "values": values,
        "skipped": skipped,
    }


def confidence_intervals(metric, states: Sequence[dict], config: EvalConfig) -> dict[str, list[float] | None]:
    """Percentile bootstrap intervals over videos, one resampling per metric seeded from ``config.seed``."""
    if not states or config.bootstrap == 0:
        return {figure: None for figure in metric.figures}
    rng = np.random.default_rng([config.seed, zlib.crc32(metric.name.encode())])
    resamples = rng.integers(0, len(states), size=(config.bootstrap, len(states)))
    draws = metric.bootstrap(states, resamples)
    tail = 100.0 * (1.0 - config.confidence) / 2.0
    out = {}
    for figure, values in draws.items():
        values = values[~np.isnan(values)]
        out[figure] = [float(np.percentile(values, tail)), float(np.percentile(values, 100.0 - tail))] if len(values) else None
    return out


def write_json(path: Path, data, indent: int | None = 1) -> Path:
    """Write JSON through a temporary name, so a stopped run never leaves a truncated file."""
    return atomic.write_json(path, data, indent=indent)


def find_figure(results: dict, figure: str) -> tuple[float | None, list[float] | None]:
    """``(value, confidence interval)`` of ``figure`` in a run's results (Nones when no metric has it)."""
    for metric in results["metrics"].values():
        if figure in metric["figures"]:
            return metric["aggregate"].get(figure), (metric["ci"] or {}).get(figure)
    return None, None


def read_results(run_dir: str | Path) -> dict:
    """The results of a finished run (a folder holding ``results.json``, or that file)."""
    path = Path(run_dir)
    path = path / RESULTS_NAME if path.is_dir() else path
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} holds no {RESULTS_NAME} (is it an evaluation output folder?)")
    results = json.loads(path.read_text())
    if results.get("schema") != RESULTS_KIND:
        raise ValueError(f"{path} is not an evaluation results file")
    return results
