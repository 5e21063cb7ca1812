"""A static HTML report of one evaluation run: ``OUT/report.html`` plus ``OUT/media/``.

It opens from ``file://`` with no server and no network: styles, script and the
histograms (SVG drawn here) are inline; each video's input skeleton and
generated frames are copied into ``media/`` as mp4 with a poster PNG and a GIF
fallback for browsers that cannot play H.264. Videos can be sorted by any
figure (``#sort=<figure>&dir=asc`` in the URL picks the initial order).
"""

from __future__ import annotations

import datetime
import html
import json
import shutil
from pathlib import Path

import numpy as np

from datasets.atomic import atomic_path, write_text
from evaluation.report_assets import CSS, JS
from evaluation.video_io import VideoError, read_video, thumbnail_frames, write_gif, write_png

REPORT_NAME = "report.html"
MEDIA_DIR = "media"
LABELS = {
    "clip_score": "CLIP score",
    "frame_consistency": "Frame consistency",
    "pose_ap": "Pose AP",
    "pose_ap50": "Pose AP50",
    "pose_ap75": "Pose AP75",
    "temporal_flickering": "Temporal flickering",
    "warping_error": "Warping error",
}

FIGURE_NOTES = {
    "pose_ap50": "Pose AP at the single OKS threshold 0.50 (lenient).",
    "pose_ap75": "Pose AP at the single OKS threshold 0.75 (strict).",
}


def label(figure: str) -> str:
    return LABELS.get(figure, figure.replace("_", " ").capitalize())


def fmt(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def write_report(results: dict, out_dir: str | Path, preview_side: int = 256, preview_frames: int = 16) -> Path:
    """Write ``report.html`` (and its media) for ``results`` into ``out_dir``; returns the HTML path."""
    out_dir = Path(out_dir)
    media = out_dir / MEDIA_DIR
    media.mkdir(parents=True, exist_ok=True)
    for video in results["videos"]:
        video["media"] = export_media(video, media, preview_side, preview_frames)
    body = "\n".join([
        _summary_section(results),
        _histogram_section(results),
        _videos_section(results),
        _rejected_section(results),
        _settings_section(results),
    ])
    page = html_page(f"Evaluation · {', '.join(results['model_ids'])}", _header(results), body)
    path = out_dir / REPORT_NAME
    return write_text(path, page)


def export_media(video: dict, media: Path, side: int, frames: int) -> dict:
    """Copy a video (and its pose video) into ``media`` with poster and GIF previews; relative paths."""
    out = {}
    for kind, source in (("generated", video["path"]), ("pose", video.get("pose_path"))):
        if not source:
            continue
        stem = video["key"] + (".pose" if kind == "pose" else "")
        target, poster, gif = media / f"{stem}.mp4", media / f"{stem}.poster.png", media / f"{stem}.gif"
        try:
            if not (target.exists() and gif.exists() and poster.exists()):
                with atomic_path(target) as temp:
                    shutil.copyfile(source, temp)
                small = thumbnail_frames(read_video(source), side, frames)
                write_png(poster, small[0])
                write_gif(gif, small, fps=float(video.get("fps") or 8) * len(small) / max(1, video.get("frames") or len(small)))
        except (OSError, VideoError):
            continue
        out[kind] = {"mp4": f"{MEDIA_DIR}/{target.name}", "poster": f"{MEDIA_DIR}/{poster.name}", "gif": f"{MEDIA_DIR}/{gif.name}"}
    return out


def html_page(title: str, header: str, body: str) -> str:
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n{header}\n<main>\n{body}\n</main>\n"
        f"<footer>follow-your-pose evaluation · written {datetime.date.today().isoformat()}</footer>\n"
        f"<script>{JS}</script>\n</body></html>\n"
    )


def _header(results: dict) -> str:
    counts = results["counts"]
    chips = [f"{counts['evaluated']} videos evaluated"]
    if counts["rejected"]:
        chips.append(f"{counts['rejected']} rejected")
    if {"clip", "frame_consistency"} & set(results["metrics"]):
        chips.append(f"CLIP: {results['clip_backbone'].get('model')}")
    if "pose_ap" in results["metrics"]:
        chips.append(f"pose: {results['metrics']['pose_ap']['settings']['backend']}")
    chips += [f"model: {m}" for m in results["model_ids"]]
    chips += [f"data: {d}" for d in results["data_ids"][:3]]
    chip_html = "".join(f'<span class="chip">{html.escape(c)}</span>' for c in chips)
    return (
        f'<header><h1>Pose-guided video evaluation</h1><div class="sub">{html.escape(results["videos_dir"])} · '
        f'{html.escape(results["created"])}</div><div class="chips">{chip_html}</div></header>'
    )


def _summary_section(results: dict) -> str:
    rows = []
    level = round(100 * results["config"]["confidence"])
    for name, metric in results["metrics"].items():
        for figure in metric["figures"]:
            what = FIGURE_NOTES.get(figure, metric["description"])
            ci = (metric["ci"] or {}).get(figure)
            ci_text = f"[{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "–"
            arrow = "higher is better" if metric["higher_is_better"] else "lower is better"
            rows.append(
                f"<tr><td><b>{label(figure)}</b><div class=\"dir\">{arrow}</div></td>"
                f"<td class=\"num big\">{fmt(metric['aggregate'].get(figure))}</td><td class=\"num\">{ci_text}</td>"
                f"<td class=\"num\">{metric['videos']}</td><td class=\"num\">{metric['skipped']}</td>"
                f"<td class=\"muted\">{html.escape(what)}</td></tr>"
            )
    return (
        '<section><h2>Metrics</h2><div class="panel"><table><thead><tr><th>Figure</th><th class="num">Value</th>'
        f'<th class="num">{level}% CI (bootstrap)</th><th class="num">Videos</th><th class="num">Skipped</th>'
        f'<th>What it measures</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div></section>'
    )


def _histogram_section(results: dict) -> str:
    panels = []
    for metric in results["metrics"].values():
        for figure in metric["figures"][:1] if metric["figures"][0] == "pose_ap" else metric["figures"]:
            values = [v["values"].get(figure) for v in results["videos"]]
            values = [v for v in values if v is not None]
            if not values:
                continue
            svg = histogram_svg(values, metric["aggregate"].get(figure), (metric["ci"] or {}).get(figure))
            panels.append(f'<div class="panel hist"><h3>{label(figure)}</h3><div class="muted">{len(values)} videos, '
                          f'per-video values</div>{svg}</div>')
    return f'<section><h2>Distributions</h2><div class="hists">{"".join(panels)}</div></section>' if panels else ""


def histogram_svg(values, mean=None, ci=None, bins: int = 16, width: int = 320, height: int = 150) -> str:
    """An inline SVG histogram of ``values`` with the pooled value as a line and its interval shaded."""
    values = np.asarray(values, dtype=float)
    low, high = float(values.min()), float(values.max())
    if ci:
        low, high = min(low, ci[0]), max(high, ci[1])
    if mean is not None:
        low, high = min(low, mean), max(high, mean)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    left, right, top, bottom = 8, width - 8, 10, height - 24
    x = lambda v: left + (v - low) / (high - low) * (right - left)  # noqa: E731
    scale = (bottom - top) / max(1, counts.max())
    parts = [f'<svg viewBox="0 0 {width} {height}" role="img" xmlns="http://www.w3.org/2000/svg">']
    if ci:
        parts.append(f'<rect x="{x(ci[0]):.1f}" y="{top}" width="{max(1.0, x(ci[1]) - x(ci[0])):.1f}" '
                     f'height="{bottom - top}" fill="#4f5bd5" opacity="0.12"/>')
    for count, a, b in zip(counts, edges[:-1], edges[1:]):
        if count:
            h = count * scale
            parts.append(f'<rect x="{x(a) + 1:.1f}" y="{bottom - h:.1f}" width="{max(1.0, x(b) - x(a) - 2):.1f}" '
                         f'height="{h:.1f}" rx="2" fill="#4f5bd5"><title>{a:.2f}–{b:.2f}: {count}</title></rect>')
    parts.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#c5c9d6"/>')
    if mean is not None:
        parts.append(f'<line x1="{x(mean):.1f}" y1="{top - 4}" x2="{x(mean):.1f}" y2="{bottom}" stroke="#d0463b" '
                     f'stroke-width="2" stroke-dasharray="4 3"/>')
    for value, anchor in ((low, "start"), (high, "end")):
        parts.append(f'<text x="{x(value):.1f}" y="{height - 6}" font-size="11" fill="#6b7285" '
                     f'text-anchor="{anchor}">{value:.2f}</text>')
    if mean is not None:
        parts.append(f'<text x="{x(mean):.1f}" y="{height - 6}" font-size="11" fill="#d0463b" '
                     f'text-anchor="middle">{mean:.2f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _figures(results: dict) -> list[str]:
    return [f for metric in results["metrics"].values() for f in metric["figures"]]


def _data_attributes(video: dict, figures: list[str]) -> str:
    attrs = [f'data-key="{html.escape(video["key"])}"']
    for figure in figures:
        value = video["values"].get(figure)
        attrs.append(f'data-{figure.replace("_", "-")}="{"" if value is None else f"{value:.6g}"}"')
    return " ".join(attrs)


def _media_figure(media: dict | None, caption: str, aspect: str) -> str:
    if not media:
        return f'<figure><div class="muted" style="aspect-ratio:{aspect};color:#999;padding:20px">no {caption}</div></figure>'
    return (
        f'<figure><video loop muted playsinline preload="none" poster="{media["poster"]}" '
        f'data-gif="{media["gif"]}" aria-label="{caption}"><source src="{media["mp4"]}" type="video/mp4">'
        f'<img src="{media["gif"]}" alt="{caption}"></video><figcaption>{caption}</figcaption></figure>'
    )


def _card(video: dict, figures: list[str]) -> str:
    aspect = f'{video.get("width") or 1}/{video.get("height") or 1}'
    chips = []
    for figure in figures:
        if figure in ("pose_ap50", "pose_ap75"):
            continue
        value = video["values"].get(figure)
        if value is not None:
            chips.append(f'<span class="value">{label(figure)} <b>{fmt(value)}</b></span>')
    for metric, reason in video["skipped"].items():
        chips.append(f'<span class="value skip" title="{html.escape(reason)}">{html.escape(metric)}: skipped</span>')
    media = video.get("media", {})
    return (
        f'<div class="card" {_data_attributes(video, figures)} style="--aspect:{aspect}">'
        f'<div class="media">{_media_figure(media.get("pose"), "input pose", aspect)}'
        f'{_media_figure(media.get("generated"), "generated", aspect)}</div>'
        f'<div class="body"><div class="key">{html.escape(video["key"])}</div>'
        f'<div class="prompt">{html.escape(video.get("prompt") or "")}</div>'
        f'<div class="values">{"".join(chips)}</div></div></div>'
    )


def _videos_section(results: dict) -> str:
    figures = _figures(results)
    options = "".join(f'<option value="{f.replace("_", "-")}">{label(f)}</option>' for f in figures)
    options += '<option value="key">Name</option>'
    head = "".join(f'<th class="num sortable" data-sort="{f.replace("_", "-")}">{label(f)}</th>' for f in figures)
    rows = []
    for video in results["videos"]:
        cells = "".join(f'<td class="num">{fmt(video["values"].get(f))}</td>' for f in figures)
        rows.append(f'<tr {_data_attributes(video, figures)}><td><code>{html.escape(video["key"])}</code></td>'
                    f'<td>{html.escape(video.get("prompt") or "")}</td>{cells}</tr>')
    cards = "".join(_card(video, figures) for video in results["videos"])
    return (
        '<section><h2>Videos</h2><div class="controls"><label for="sortkey">Sort by</label>'
        f'<select id="sortkey">{options}</select><button id="sortdir" type="button">descending ↓</button>'
        f'<span class="count">{len(results["videos"])} videos · input skeleton (left) and generated video (right)</span></div>'
        f'<div class="cards" id="cards">{cards}</div></section>'
        '<section><h2>Per-video table</h2><div class="panel scroll"><table id="videotable"><thead><tr>'
        f'<th class="sortable" data-sort="key">Video</th><th>Prompt</th>{head}</tr></thead>'
        f'<tbody>{"".join(rows)}</tbody></table></div></section>'
    )


def _settings_section(results: dict) -> str:
    settings = {
        "config": results["config"],
        "clip_backbone": results["clip_backbone"],
        "metric_settings": {name: m["settings"] for name, m in results["metrics"].items()},
        "timings_seconds": results.get("timings", {}),
    }
    text = html.escape(json.dumps(settings, indent=1))
    return (f'<section><details class="panel"><summary><b>Settings and timings</b></summary>'
            f'<pre style="overflow:auto;font-size:12px">{text}</pre></details></section>')


def _rejected_section(results: dict) -> str:
    if not results["rejected"]:
        return ""
    rows = "".join(f'<tr><td><code>{html.escape(r["key"])}</code></td><td>{html.escape(r["reason"])}</td></tr>'
                   for r in results["rejected"])
    return (f'<section><h2>Rejected videos</h2><div class="panel"><table><thead><tr><th>Video</th><th>Reason</th>'
            f'</tr></thead><tbody>{rows}</tbody></table></div></section>')
