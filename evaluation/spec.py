"""Generate the videos a generation spec asks for, then hand the folder to the evaluator.

A spec is JSON or JSONL. JSON: ``{"defaults": {...}, "items": [{...}, ...]}`` (or a
bare list of items); JSONL: one item per line. An item names a ``prompt`` and a
``pose`` (anything ``training.generate --pose`` takes: skeleton video, image
folder, pose-sequence folder or keypoints file; relative paths are relative to
the spec file) and may set any other :class:`training.generate.GenerateConfig`
field (``frames``, ``seed``, ``steps``, ``guidance_scale``, ``key``...);
``defaults`` apply to every item. The toy world's held-out ``spec.json`` (schema
``toy_eval_spec``) is read too: its entries' generation fields become items, each with its
``toy`` reference (colours, figure style, mask tolerance) for the toy metrics. Example::

    {"defaults": {"frames": 16, "steps": 50, "guidance_scale": 12.5},
     "items": [{"key": "ironman_beach", "prompt": "Iron Man on the beach", "pose": "poses/dance1"}]}

The whole spec is checked before any model loads. The pipeline is loaded once
and serves every item; each video is written to ``OUT/<key>.mp4`` with its
sidecars (``OUT.mp4`` last, so it exists only when complete). A rerun skips
finished items, so a stopped run resumes. An item that fails (bad pose input)
is recorded in ``OUT/generation.json`` with its reason; the others go on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Callable

from datasets.toy_world import SPEC_KIND as TOY_SPEC_KIND
from datasets.toy_world import reference as toy_reference
from evaluation.evaluator import write_json

SUMMARY_NAME = "generation.json"
FIXED_FIELDS = ("model", "out")
# The toy world's held-out ``spec.json`` (datasets/toy_world.py): its entries carry these generation fields.
TOY_SPEC_FIELDS = ("key", "prompt", "pose", "frames", "seed", "width", "height", "fps")
# Fields that shape the loaded pipeline: they must be the same for every item.
PIPELINE_FIELDS = ("base", "lora", "lora_scale", "device", "dtype")
log = logging.getLogger(__name__)


def read_spec(path: str | Path) -> list[dict]:
    """The items of a spec with defaults applied and pose paths made absolute; ValueError on a malformed spec."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"spec {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".jsonl":
            data = {"items": [json.loads(line) for line in text.splitlines() if line.strip()]}
        else:
            data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"spec {path} is not valid JSON: {error}") from error
    if isinstance(data, list):
        data = {"items": data}
    if isinstance(data, dict) and data.get("schema") == TOY_SPEC_KIND:
        data = {"items": [toy_item(data, e) for e in data.get("entries", [])]}
    if not isinstance(data, dict) or not isinstance(data.get("items"), list) or not data["items"]:
        raise ValueError(f"spec {path} has no items (expected a list of {{prompt, pose, ...}} objects)")
    defaults = data.get("defaults") or {}
    items = []
    for index, raw in enumerate(data["items"]):
        if not isinstance(raw, dict):
            raise ValueError(f"spec item {index} is not an object")
        item = {**defaults, **raw}
        item.setdefault("key", f"{index:05d}")
        for name in ("prompt", "pose"):
            if not item.get(name):
                raise ValueError(f"spec item {index} ({item['key']}) has no {name}")
        pose = Path(item["pose"])
        item["pose"] = str(pose if pose.is_absolute() else (path.parent / pose).resolve())
        if not Path(item["pose"]).exists():
            raise ValueError(f"spec item {index} ({item['key']}): pose {item['pose']} does not exist")
        items.append(item)
    keys = [item["key"] for item in items]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ValueError(f"spec keys must be unique; repeated: {', '.join(duplicates)}")
    return items


def toy_item(spec: dict, entry: dict) -> dict:
    """A toy spec entry's generation fields, with its ``toy`` reference (kept in the record for the toy metrics)."""
    item = {k: entry[k] for k in TOY_SPEC_FIELDS if k in entry}
    if "figure" in entry and "background" in entry:
        item["toy"] = toy_reference(spec, entry["figure"], entry["background"])
    return item


def generation_configs(items: list[dict], model: str | Path, out_dir: Path, device: str = "auto") -> list:
    """One ``GenerateConfig`` per item; an unknown field is an error listing the valid ones."""
    from follow_your_pose.generate import GenerateConfig

    valid = {f.name for f in dataclasses.fields(GenerateConfig)} - set(FIXED_FIELDS)
    configs = []
    for item in items:
        unknown = sorted(set(item) - valid)
        if unknown:
            raise ValueError(f"spec item {item['key']}: unknown field(s) {unknown}; valid: {', '.join(sorted(valid))}")
        options = {"device": device, **item, "model": str(model), "out": str(out_dir / f"{item['key']}.mp4")}
        configs.append(GenerateConfig(**options))
    for name in PIPELINE_FIELDS:
        values = {str(getattr(c, name)) for c in configs}
        if len(values) > 1:
            raise ValueError(f"one pipeline serves the whole spec, but items set different {name!r}: {sorted(values)}")
    return configs


def generate_from_spec(
    spec: str | Path, model: str | Path, out_dir: str | Path, device: str = "auto", options: dict | None = None
) -> Path:
    """Generate every unfinished item of ``spec`` with ``model`` into ``out_dir``; ``options`` (generation fields,
    e.g. ``{"pose_guidance": true}``) override every item's. Returns ``out_dir``."""
    items = [{**item, **(options or {})} for item in read_spec(spec)]
    generate_items(items, model, out_dir, device, source=str(Path(spec).resolve()))
    return Path(out_dir)


def generate_items(
    items: list[dict], model: str | Path, out_dir: str | Path, device: str = "auto", *,
    configure: Callable | None = None, source: str | None = None,
) -> dict:  # fmt: skip
    """Generate every unfinished item (spec items, see :func:`read_spec`) into ``out_dir`` with one pipeline;
    ``configure(pipeline)`` may adjust it first (e.g. its attention processors). Writes and returns the summary."""
    from tqdm.auto import tqdm

    from follow_your_pose.generate import generate, load_pipeline

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    configs = generation_configs(items, model, out_dir, device)
    todo = [c for c in configs if not Path(c.out).exists()]
    summary = {"spec": source, "model": str(model), "items": len(configs),
               "already_done": len(configs) - len(todo), "generated": [], "failed": []}  # fmt: skip
    if todo:
        pipeline = load_pipeline(todo[0])
        pipeline.set_progress_bar_config(disable=True)
        if configure is not None:
            configure(pipeline)
        for config in tqdm(todo, desc="generating", unit="video"):
            try:
                generate(config, pipeline=pipeline)
            except (ValueError, FileNotFoundError) as error:
                log.warning("could not generate %s: %s", config.key, error)
                summary["failed"].append({"key": config.key, "reason": str(error)})
                continue
            summary["generated"].append(config.key)
    write_json(out_dir / SUMMARY_NAME, summary)
    log.info("%s: %d generated, %d already there, %d failed", source or out_dir, len(summary["generated"]),
             summary["already_done"], len(summary["failed"]))
    return summary
