"""The HTML report in a real headless browser (Debian's chromium): it renders, and its sorting script runs."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from evaluation.run import main
from tests.test_metrics import person, write_generated_video

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (apt-get install -y chromium)")


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--no-first-run", "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
        "--hide-scrollbars", *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=True)


@pytest.fixture(scope="module")
def report(tmp_path_factory, people_photos) -> Path:
    """A report over three videos made from real photos, drifting at different speeds."""
    from PIL import Image

    root = tmp_path_factory.mktemp("report")
    for index, (name, speed) in enumerate((("astronaut", 1), ("grace_hopper", 4), ("camera", 9))):
        photo = np.asarray(Image.fromarray(people_photos[name]).resize((96, 96)))
        frames = np.stack([np.roll(photo, speed * t, axis=1) for t in range(6)])
        keypoints = [person(dx=16 + 2 * t, dy=16 + index) for t in range(6)]
        write_generated_video(root / "videos", name, frames, keypoints, f"{name.replace('_', ' ')} in a studio")
    out = root / "out"
    assert main(["--videos", str(root / "videos"), "--out", str(out), "--metrics",
                 "temporal_flickering,warping_error", "--bootstrap", "200", "--quiet"]) == 0
    return out


def test_report_renders_in_headless_chromium(report, tmp_path):
    from PIL import Image

    shot = tmp_path / "report.png"
    chromium(tmp_path, "--window-size=1280,1800", f"--screenshot={shot}", (report / "report.html").as_uri())
    image = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    assert image.shape[:2] == (1800, 1280)
    assert image.std() > 20, "the screenshot is blank"
    header = image[20:80, 20:400].reshape(-1, 3).mean(axis=0)
    assert header[2] > header[0] + 40, f"the header is not the report's indigo (mean RGB {header})"
    unique = len(np.unique(image[::4, ::4].reshape(-1, 3), axis=0))
    assert unique > 200, f"only {unique} colours: media or histograms did not render"


def card_order(dom: str) -> list[str]:
    cards = dom[dom.index('id="cards"'):]
    return re.findall(r'<div class="card" data-key="([^"]+)"', cards)


@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_sorting_script_orders_cards_by_a_metric(report, tmp_path, direction):
    results = json.loads((report / "results.json").read_text())
    values = {v["key"]: v["values"]["warping_error"] for v in results["videos"]}
    expected = sorted(values, key=values.get, reverse=direction == "desc")
    assert len(set(values.values())) == 3
    url = (report / "report.html").as_uri() + f"#sort=warping-error&dir={direction}"
    dom = chromium(tmp_path, "--dump-dom", url).stdout
    assert f'data-sorted-by="warping-error:{direction}"' in dom, "the sorting script did not run"
    assert card_order(dom) == expected
    table = dom[dom.index('id="videotable"'):]
    assert re.findall(r'<tr data-key="([^"]+)"', table) == expected
