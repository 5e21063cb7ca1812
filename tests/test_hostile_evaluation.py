"""Hostile and careless inputs to ``python -m evaluation.run --videos``: a video whose record is missing is a
counted rejection with its reason, never a silent skip; an unusable --out is one line and exit code 2."""

from __future__ import annotations

import json

import numpy as np

from tests.hostile import assert_refused, run_entry
from tests.test_metrics import person, write_generated_video


def _videos(folder):
    frames = np.full((4, 32, 32, 3), 90, np.uint8)
    for key in ("whole", "orphan"):
        write_generated_video(folder, key, frames, [person()] * 4, f"a video {key}")
    (folder / "orphan.json").unlink()  # its sidecar record is lost
    (folder / "loose.mp4").write_bytes((folder / "orphan.mp4").read_bytes())  # an mp4 that never had sidecars
    return folder


def test_a_video_without_its_record_is_rejected_with_the_reason(tmp_path):
    videos, out = _videos(tmp_path / "videos"), tmp_path / "eval"
    done = run_entry("-m", "evaluation.run", "--videos", str(videos), "--out", str(out), "--metrics", "temporal_flickering",
                     "--no-report", "--quiet")  # fmt: skip
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["counts"] == {"videos": 3, "evaluated": 1, "rejected": 2}
    reasons = {row["key"]: row["reason"] for row in results["rejected"]}
    assert set(reasons) == {"orphan", "loose"} and all("no record" in r and ".json beside it" in r for r in reasons.values())
    assert "1 evaluated, 2 rejected" in done.stdout


def test_an_unusable_out_folder_is_one_line(tmp_path):
    videos = _videos(tmp_path / "videos")
    afile = tmp_path / "a-file"
    afile.write_text("x")
    done = run_entry("-m", "evaluation.run", "--videos", str(videos), "--out", str(afile), "--metrics", "temporal_flickering")
    assert_refused(done, f"--out {afile} is a file, not a folder")
    done = run_entry("-m", "evaluation.run", "--videos", str(tmp_path / "none"), "--out", str(tmp_path / "o"))
    assert_refused(done, f"--videos {tmp_path / 'none'} is not a folder")
