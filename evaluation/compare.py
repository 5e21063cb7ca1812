"""Side-by-side table of evaluation runs, like the paper's Table 1 (markdown + ``compare.html``).

Each run is an output folder of ``evaluation.run`` (its ``results.json``). Rows
are runs, columns the headline figures; the best value of each column is
bold (taking each metric's direction into account), intervals are shown as
``±`` half-widths. Runs scored with different CLIP backbones or pose
estimators are flagged, since their numbers are not comparable.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

from datasets.atomic import write_text
from evaluation.evaluator import find_figure, read_results
from evaluation.report import fmt, html_page, label

COMPARE_NAME = "compare.html"
# Paper Table 1 (CLIP score, pose AP, frame consistency), as reported; ViT backbone and detector per the paper.
PAPER_ROWS = {
    "Follow-Your-Pose (paper)": {"clip_score": 24.09, "pose_ap": 34.92, "frame_consistency": 93.36},
    "Tune-A-Video (paper)": {"clip_score": 23.57, "pose_ap": 27.74, "frame_consistency": 93.78},
    "ControlNet (paper)": {"clip_score": 22.31, "pose_ap": 33.23, "frame_consistency": 54.35},
    "T2I-Adapter (paper)": {"clip_score": 22.42, "pose_ap": 33.47, "frame_consistency": 53.86},
}
PAPER_NOTE = ("paper rows are the published Table 1 figures (1024 videos; its CLIP backbone and pose detector "
              "settings are not fully specified): for orientation, not a like-for-like comparison")
HEADLINE_ORDER = ("clip_score", "pose_ap", "frame_consistency")


def load_runs(run_dirs: Sequence[str | Path]) -> list[tuple[str, dict]]:
    """``(name, results)`` per run; names are folder names, made unique with their parent when needed."""
    runs = [(Path(d), read_results(d)) for d in run_dirs]
    names = [p.name if p.is_dir() else p.parent.name for p, _ in runs]
    if len(set(names)) < len(names):
        names = [f"{p.resolve().parent.name}/{n}" for (p, _), n in zip(runs, names)]
    return list(zip(names, (r for _, r in runs)))


def columns(runs: list[tuple[str, dict]]) -> list[tuple[str, bool]]:
    """``(figure, higher_is_better)`` columns: the paper's three first, then every other figure any run has."""
    found: dict[str, bool] = {}
    for _, results in runs:
        for metric in results["metrics"].values():
            for figure in metric["figures"]:
                found.setdefault(figure, metric["higher_is_better"])
    ordered = [f for f in HEADLINE_ORDER if f in found] + [f for f in found if f not in HEADLINE_ORDER]
    return [(f, found[f]) for f in ordered]


def _cell(results: dict, figure: str) -> tuple[float | None, float | None]:
    value, ci = find_figure(results, figure)
    return value, (None if not ci else (ci[1] - ci[0]) / 2)


def comparability_warnings(runs: list[tuple[str, dict]]) -> list[str]:
    """Settings that differ between runs and make their numbers incomparable."""
    warnings = []
    backbones = {r["clip_backbone"].get("model") for _, r in runs if {"clip", "frame_consistency"} & set(r["metrics"])}
    if len(backbones) > 1:
        warnings.append(f"CLIP backbones differ ({', '.join(sorted(map(str, backbones)))}): CLIP figures are not comparable")
    estimators = {str(r["metrics"]["pose_ap"]["settings"]) for _, r in runs if "pose_ap" in r["metrics"]}
    if len(estimators) > 1:
        warnings.append("pose estimators or pose settings differ: pose AP figures are not comparable")
    return warnings


def compare_runs(run_dirs: Sequence[str | Path], out_dir: str | Path = ".", paper: bool = False) -> str:
    """Write ``compare.html`` into ``out_dir`` and return the markdown table (with warnings below it)."""
    runs = load_runs(run_dirs)
    cols = columns(runs)
    table = [(name, {f: _cell(results, f) for f, _ in cols}, results["counts"]["evaluated"]) for name, results in runs]
    best = {}
    for figure, higher in cols:
        values = [cells[figure][0] for _, cells, _ in table if cells[figure][0] is not None]
        best[figure] = (max if higher else min)(values) if values else None
    paper_rows = [(n, {f: (v.get(f), None) for f, _ in cols}, None) for n, v in PAPER_ROWS.items()] if paper else []
    warnings = comparability_warnings(runs)
    if paper:
        warnings.append(PAPER_NOTE)
    markdown = _markdown(table, paper_rows, cols, best, warnings)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / COMPARE_NAME
    write_text(path, _html(table, paper_rows, cols, best, warnings, runs))
    return markdown


def _text(value, half, bold: bool) -> str:
    text = fmt(value) + (f" ± {fmt(half)}" if half is not None else "")
    return f"**{text}**" if bold and value is not None else text


def _markdown(table, paper_rows, cols, best, warnings) -> str:
    head = ["Method"] + [f"{label(f)} {'↑' if up else '↓'}" for f, up in cols] + ["Videos"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(cols) + 1)) + "|"]
    for name, cells, count in table + paper_rows:
        row = [name] + [_text(*cells[f], bold=count is not None and cells[f][0] == best[f]) for f, _ in cols]
        lines.append("| " + " | ".join(row + ["–" if count is None else str(count)]) + " |")
    lines += [f"\n> {'note' if w == PAPER_NOTE else 'warning'}: {w}" for w in warnings]
    return "\n".join(lines)


def _html(table, paper_rows, cols, best, warnings, runs) -> str:
    head = "".join(f'<th class="num">{label(f)} <span class="dir">{"↑" if up else "↓"}</span></th>' for f, up in cols)
    rows = []
    for name, cells, count in table + paper_rows:
        tds = []
        for figure, _ in cols:
            value, half = cells[figure]
            css = "num best" if count is not None and value is not None and value == best[figure] else "num"
            ci = f'<div class="dir">± {fmt(half)}</div>' if half is not None else ""
            tds.append(f'<td class="{css}">{fmt(value)}{ci}</td>')
        klass = ' class="paper"' if count is None else ""
        rows.append(f'<tr{klass}><td><b>{html.escape(name)}</b></td>{"".join(tds)}'
                    f'<td class="num">{"–" if count is None else count}</td></tr>')
    details = "".join(
        f"<tr><td><b>{html.escape(name)}</b></td><td>{html.escape(', '.join(r['model_ids']))}</td>"
        f"<td>{html.escape(str(r['clip_backbone'].get('model')))}</td><td><code>{html.escape(r['videos_dir'])}</code></td></tr>"
        for name, r in runs
    )
    notes = "".join(f'<div class="warn">⚠ {html.escape(w)}</div>' for w in warnings)
    body = (
        f'<section><h2>Side by side</h2><div class="panel"><table><thead><tr><th>Method</th>{head}'
        f'<th class="num">Videos</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
        '<div class="muted" style="margin-top:8px">± is half the bootstrap confidence interval over videos; '
        f'bold is the best measured run per column.</div>{notes}</div></section>'
        '<section><h2>Runs</h2><div class="panel"><table><thead><tr><th>Run</th><th>Model</th><th>CLIP backbone</th>'
        f'<th>Videos folder</th></tr></thead><tbody>{details}</tbody></table></div></section>'
    )
    header = f'<header><h1>Run comparison</h1><div class="sub">{len(runs)} runs, like the paper\'s Table 1</div></header>'
    return html_page("Run comparison", header, body)
