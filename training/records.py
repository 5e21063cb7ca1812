"""What a training run records beside its checkpoints: ``metrics.jsonl`` and the flat config its trackers log."""

from __future__ import annotations

import json
from pathlib import Path

from datasets.atomic import write_text
from training.config import TrainConfig, to_dict

METRICS = "metrics.jsonl"


def flat_config(config: TrainConfig) -> dict:
    """The config as flat ``{dotted.name: scalar}`` for trackers (tuples become strings)."""
    flat: dict = {}

    def walk(values: dict, prefix: str) -> None:
        for name, value in values.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{name}.")
            else:
                flat[prefix + name] = value if isinstance(value, (int, float, str, bool)) else str(value)

    walk(to_dict(config), "")
    return flat


class MetricsFile:
    """``OUTPUT/metrics.jsonl``: one line per optimiser step (main process); a resume drops lines past its step."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled

    def truncate_after(self, step: int) -> None:
        if not self.enabled or not self.path.is_file():
            return
        kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")


def read_metrics(output_dir: str | Path) -> dict[int, float]:
    """``{step: loss}`` from a run's ``metrics.jsonl``."""
    path = Path(output_dir) / METRICS
    records = [json.loads(line) for line in path.read_text().splitlines() if line]
    return {record["step"]: record["loss"] for record in records}
