"""The toy table (benchmarks/toy_table.py) at smoke scale: every step runs for real, the outputs hold every row and
claim, untrained controls are what they claim to be, and a rerun resumes without redoing anything."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.toy_table import RUNS, SCALES, WORLD, run_table

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("toy_table")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return out, run_table(out, SCALES["smoke"], device="cpu", jobs=2)  # model steps two at a time, in processes
    finally:
        torch.set_num_threads(previous)


def test_table_has_every_row_claim_and_figure(table):
    out, result = table
    scale = SCALES["smoke"]
    text = (out / "table.md").read_text()
    for run in RUNS:
        assert run.subset == "seen" or run.label in text, run.label  # seen-pair runs are columns of their model's row
    assert "oracle" in text and "Trained pairs: prompt fidelity" in text and "The paper's claims, measured" in text
    assert len(result["claims"]) == 6
    assert {c["verdict"] for c in result["claims"]} <= {"met", "missed", "agrees", "disagrees", "inconclusive"}
    for run in RUNS:
        expected = scale.eval_long_videos if run.subset == "long" else scale.eval_videos  # seen: the short poses
        assert result["scores"][run.name]["videos"] == expected, run.name
        iou = result["scores"][run.name]["figures"]["pose_iou"][0]
        assert 0.0 <= iou <= 1.0
    oracle = result["scores"]["oracle"]["figures"]
    assert oracle["pose_iou"][0] > 0.6, "the toy world's own rendering matches its poses (metric plumbing)"
    assert oracle["pose_iou"][0] > 2 * oracle["pose_iou_shuffled"][0]
    assert oracle["prompt_fidelity"][0] > 0.9
    assert set(result["seconds"]) >= {"world", "stage0", "stage2", "generate_stage2", "evaluate_oracle", "total_steps"}


def test_no_control_row_is_the_base_model_untouched(table):
    from follow_your_pose.models.control_encoder import ControlEncoder

    out, _ = table
    model = out / "stage1_no_control" / "model"
    encoder = ControlEncoder.from_pretrained(model / "pose_encoder")
    residuals = encoder(torch.rand(2, 3, 32, 32)).down_residuals
    assert len(residuals) == 4 and all(torch.count_nonzero(r) == 0 for r in residuals), "zero-init: adds nothing to the UNet"
    assert json.loads((out / "stage1_residual" / "model" / "base.json").read_text())["pretrained"].endswith("stage0/model")


def test_generated_records_name_their_colours_and_the_worlds_figure_style(table):
    from datasets.generated import find_generated, read_record
    from datasets.toy_world import PALETTE, parse_caption

    out, _ = table
    for name in ("residual", "residual_seen", "long_reuse", "residual_both_branches"):
        for video in find_generated(out / "videos" / name):
            record = read_record(video)
            assert record["settings"]["pose_guidance"] == (name != "residual_both_branches")
            toy = record["settings"]["toy"]
            assert (toy["figure"], toy["background"]) == parse_caption(record["prompt"], list(PALETTE))
            assert toy["figure_style"]["limb_width"] == WORLD["limb_width"], "silhouettes drawn as the world drew them"


def test_long_videos_use_noise_reuse_or_independent_windows(table):
    from datasets.generated import find_generated, read_record
    from evaluation.video_io import read_video

    out, result = table
    frames = SCALES["smoke"].eval_long_frames
    for name, overlap in (("long_reuse", None), ("long_independent", 0)):
        (video,) = find_generated(out / "videos" / name)
        assert read_record(video)["settings"]["overlap"] == overlap
        assert len(read_video(video)) == frames
        assert result["long_videos"][name]["boundaries"] >= 1
    reuse, independent = (read_video(find_generated(out / "videos" / n)[0]).astype(np.float32) for n in ("long_reuse", "long_independent"))
    window = 8
    first, later = (np.abs(reuse[s] - independent[s]).mean() for s in (slice(0, window), slice(window, None)))
    assert first < later, f"same first window (same seed), different later windows: {first:.2f} vs {later:.2f}"


def test_grid_has_a_row_per_short_run(table):
    from PIL import Image

    from benchmarks.toy_table_report import ZOOM

    out, _ = table
    short = 1 + sum(run.subset == "short" for run in RUNS)
    assert Image.open(out / "grid.png").height == short * 32 * ZOOM


def test_rerun_resumes_without_redoing_a_step(table):
    out, first = table
    stamps = {p: p.stat().st_mtime_ns for p in (out / "videos").rglob("*.mp4")}
    again = run_table(out, SCALES["smoke"], device="cpu", jobs=1)
    per_step = lambda table: {k: v for k, v in table["seconds"].items() if k not in ("total_wall", "jobs")}  # noqa: E731
    assert per_step(again) == per_step(first), "no step ran again"
    assert again["seconds"]["total_wall"] > first["seconds"]["total_wall"], "the wall clock sums both invocations"
    assert {p: p.stat().st_mtime_ns for p in (out / "videos").rglob("*.mp4")} == stamps
    assert again["claims"] == first["claims"]
