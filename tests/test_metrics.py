"""Metric values on constructed cases with known answers.

CLIP metrics run a tiny random ``CLIPModel`` built from a config, saved with the
real CLIP BPE tokenizer (open-clip-torch's vocabulary) and loaded back through
the same ``--clip-model`` path a user's checkpoint takes. Pose AP runs the real
pycocotools COCOeval; expected values come from the OKS formula written out here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from datasets.generated import make_record, write_record
from datasets.keypoints import COCO17_SIGMAS
from evaluation.config import EvalConfig
from evaluation.metrics import METRICS, MetricContext, build_metrics, check_metric_names, metric_names
from evaluation.metrics.pose_ap import detection, ground_truth, pose_ap_figures
from evaluation.metrics.warping import pair_warping_error
from evaluation.sample import VideoSample
from evaluation.video_io import write_video
from pose_extraction.skeleton import render_sequence

# A standing person, 17 COCO keypoints in a 64x64 frame.
STANDING = np.array(
    [[32, 10], [34, 8], [30, 8], [36, 9], [28, 9], [40, 20], [24, 20], [44, 30], [20, 30],
     [46, 40], [18, 40], [38, 42], [26, 42], [38, 54], [26, 54], [38, 62], [26, 62]], dtype=np.float32,
)


def person(dx: float = 0.0, dy: float = 0.0, score: float = 1.0) -> np.ndarray:
    """``(1, 17, 3)`` keypoints of the standing person moved by ``(dx, dy)``."""
    points = STANDING + np.array([dx, dy], dtype=np.float32)
    return np.concatenate([points, np.full((17, 1), score, np.float32)], axis=1)[None]


def save_tiny_clip(path: Path, seed: int = 0) -> Path:
    """A tiny random CLIP (32x32 images) with the real CLIP tokenizer, saved like a hub checkpoint."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from follow_your_pose.tiny import build_clip_tokenizer

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(path)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=build_clip_tokenizer()).save_pretrained(path)
    return path


def write_generated_video(folder: Path, key: str, frames: np.ndarray, keypoints: list | None, prompt: str,
                          pose_frames: int | None = None, video_frames: int | None = None) -> Path:
    """A generated-video triple in the :mod:`datasets.generated` layout, encoded as real mp4 files.

    ``pose_frames`` / ``video_frames`` encode fewer frames than the record says, to build broken inputs.
    """
    folder.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:3]
    video = write_video(folder / f"{key}.mp4", frames[: video_frames or len(frames)], fps=8)
    drawn = keypoints if keypoints is not None else [np.zeros((0, 17, 3), np.float32)] * len(frames)
    write_video(folder / f"{key}.pose.mp4", render_sequence(drawn, height, width)[: pose_frames or len(frames)], fps=8)
    record = make_record(
        prompt=prompt, keypoints_per_frame=keypoints, width=width, height=height, frames=len(frames), fps=8,
        model="tiny-test", settings={"steps": 2}, source="synthetic-poses", key=key,
    )
    write_record(video, record)
    return video


def sample_of(frames: np.ndarray, prompt: str = "a dancer", keypoints=None, key: str = "v") -> VideoSample:
    record = {"prompt": prompt, "keypoints": None if keypoints is None else [k.tolist() for k in keypoints]}
    return VideoSample(key=key, path=Path(f"{key}.mp4"), pose_path=None, record=record, frames=frames)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def clip_context(tiny_clip):
    with MetricContext(EvalConfig(clip_model=str(tiny_clip), clip_batch_size=3, metrics=("clip",))) as context:
        yield context


def textured(seed: int, frames: int = 5, size: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, size, size, 3), dtype=np.uint8)


def test_registry_lists_valid_names_on_unknown_metric():
    assert {"clip", "frame_consistency", "pose_ap", "temporal_flickering", "warping_error"} <= set(metric_names())
    with pytest.raises(ValueError, match="valid metrics: .*clip.*frame_consistency.*pose_ap"):
        check_metric_names(["clip", "fvd_typo"])
    assert all(METRICS[name].name == name for name in metric_names())


def independent_clip_score(model_dir: Path, frames: np.ndarray, prompt: str) -> np.ndarray:
    """Per-frame 100*cos from the towers and projections directly, not through the metric's code."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    model, processor = CLIPModel.from_pretrained(model_dir).eval(), CLIPProcessor.from_pretrained(model_dir)
    with torch.no_grad():
        pixels = processor.image_processor(images=list(frames), return_tensors="pt")["pixel_values"]
        image = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        ids = processor.tokenizer([prompt], return_tensors="pt")
        text = model.text_projection(model.text_model(**ids).pooler_output)
    cos = torch.nn.functional.cosine_similarity(image, text, dim=-1)
    return 100.0 * cos.numpy()


def test_clip_score_is_100_cos_averaged_over_frames(tiny_clip, clip_context):
    clip, = build_metrics(["clip"], clip_context)
    frames = textured(1, frames=7)
    state = clip.update(sample_of(frames, "an astronaut dancing on the moon"))
    expected = independent_clip_score(tiny_clip, frames, "an astronaut dancing on the moon")
    np.testing.assert_allclose(state["per_frame"], expected, atol=1e-3)
    assert state["values"]["clip_score"] == pytest.approx(float(expected.mean()), abs=1e-4)
    assert clip.settings() == {"clip_model": str(tiny_clip)}


def test_clip_score_ignores_frame_order_and_averages_videos(clip_context):
    clip, = build_metrics(["clip"], clip_context)
    frames = textured(2, frames=6)
    forward = clip.update(sample_of(frames, "a person waving", key="a"))
    backward = clip.update(sample_of(frames[::-1].copy(), "a person waving", key="b"))
    assert forward["values"]["clip_score"] == pytest.approx(backward["values"]["clip_score"], abs=1e-4)
    other = clip.update(sample_of(textured(3, frames=2), "a cat", key="c"))
    pooled = clip.compute([forward, other])["clip_score"]
    # videos weigh equally whatever their length: the mean of video means, not of all frames
    assert pooled == pytest.approx((forward["values"]["clip_score"] + other["values"]["clip_score"]) / 2)


def test_frame_consistency_identical_frames_is_100_and_shares_embeddings(clip_context):
    clip, consistency = build_metrics(["clip", "frame_consistency"], clip_context)
    frames = np.repeat(textured(4, frames=1), 5, axis=0)
    before = clip_context.timings["forward/clip"]
    sample = sample_of(frames, key="same")
    clip.update(sample)
    after_clip = clip_context.timings["forward/clip"]
    state = consistency.update(sample)
    assert state["values"]["frame_consistency"] == pytest.approx(100.0, abs=1e-3)
    assert after_clip > before and clip_context.timings["forward/clip"] == after_clip  # no second image pass
    changing = consistency.update(sample_of(textured(5, frames=5), key="noise"))
    assert changing["values"]["frame_consistency"] < 100.0
    assert consistency.safe_update(sample_of(frames[:1], key="one")) == {"skipped": "frame consistency needs at least 2 frames"}


def pose_state(gt_people, dt_people) -> dict:
    """A pose_ap state built straight from keypoints: what the estimator found is given, not run."""
    return {
        "gt": [ground_truth(k, 0.3, 1.0) for k in gt_people],
        "dt": [[detection(p, 1.0) for p in found] for found in dt_people],
    }


def test_pose_ap_of_a_sequence_against_itself_is_100():
    sequence = [person(dx=t) for t in range(6)]
    figures = pose_ap_figures([pose_state(sequence, sequence)])
    assert figures == {"pose_ap": 100.0, "pose_ap50": 100.0, "pose_ap75": 100.0}


def oks_of_shift(shift: float) -> float:
    """OKS of the standing person moved by ``shift`` pixels in x, from the COCO definition."""
    x1, y1 = STANDING.min(axis=0)
    x2, y2 = STANDING.max(axis=0)
    area = float((x2 - x1) * (y2 - y1))
    return float(np.mean(np.exp(-(shift**2) / (2.0 * area * (2.0 * COCO17_SIGMAS.astype(np.float64)) ** 2))))


@pytest.mark.parametrize("shift", [1.5, 2.5, 4.0])
def test_shifted_keypoints_lower_pose_ap_by_the_oks_thresholds_they_fail(shift):
    truth = [person() for _ in range(4)]
    found = [person(dx=shift) for _ in range(4)]
    oks = oks_of_shift(shift)
    thresholds = np.linspace(0.5, 0.95, 10)
    assert not np.isclose(thresholds, oks, atol=1e-3).any()
    expected = 100.0 * np.mean(oks >= thresholds)
    assert 0.0 < expected < 100.0 or shift == 4.0
    figures = pose_ap_figures([pose_state(truth, [[f] for f in found])])
    assert figures["pose_ap"] == pytest.approx(expected, abs=1e-6)
    assert figures["pose_ap50"] == (100.0 if oks >= 0.5 else 0.0)
    assert figures["pose_ap75"] == (100.0 if oks >= 0.75 else 0.0)


def test_pose_ap_missed_frames_follow_cocos_101_point_interpolation():
    truth = [person(), person()]
    figures = pose_ap_figures([pose_state(truth, [[truth[0][0]], []])])
    # recall reaches 0.5 at precision 1: 51 of COCO's 101 recall points
    assert figures["pose_ap"] == pytest.approx(100.0 * 51 / 101)


def test_pose_ap_bootstrap_reuses_cocoeval_and_matches_a_direct_recompute():
    good = pose_state([person()] * 3, [[person()[0]]] * 3)
    bad = pose_state([person()] * 3, [[person(dx=3.0)[0]]] * 3)
    metric = METRICS["pose_ap"](MetricContext(EvalConfig(metrics=("pose_ap",))))
    resamples = np.array([[0, 0, 1], [1, 1, 1], [0, 1, 0]])
    draws = metric.bootstrap([good, bad], resamples)
    for row, picks in enumerate(resamples):
        direct = pose_ap_figures([[good, bad][i] for i in picks])
        for figure, value in direct.items():
            assert draws[figure][row] == value  # exactly: the same arithmetic on the same match records
    assert pose_ap_figures([bad]) != pose_ap_figures([good])


def test_pose_ap_without_ground_truth_keypoints_is_skipped_with_a_reason():
    metric = METRICS["pose_ap"](MetricContext(EvalConfig(metrics=("pose_ap",))))
    state = metric.safe_update(sample_of(textured(0, frames=2), keypoints=None))
    assert "no input keypoints" in state["skipped"]
    assert pose_ap_figures([pose_state([np.zeros((0, 17, 3), np.float32)], [[]])])["pose_ap"] is None


def test_temporal_flickering_known_values():
    metric = METRICS["temporal_flickering"](MetricContext(EvalConfig(metrics=("temporal_flickering",))))
    still = np.full((4, 16, 16, 3), 90, np.uint8)
    assert metric.update(sample_of(still))["values"]["temporal_flickering"] == pytest.approx(100.0)
    blinking = np.stack([np.full((16, 16, 3), v, np.uint8) for v in (0, 51, 0, 51)])
    assert metric.update(sample_of(blinking))["values"]["temporal_flickering"] == pytest.approx(80.0)


def test_warping_error_zero_for_still_small_for_motion_large_for_noise():
    rng = np.random.default_rng(0)
    texture = (rng.random((72, 72, 3)) * 255).astype(np.uint8)
    import cv2

    texture = cv2.GaussianBlur(texture, (7, 7), 2.0)
    assert pair_warping_error(texture, texture) == pytest.approx(0.0, abs=1e-3)  # Farneback leaves sub-pixel noise
    moved = np.roll(texture, 2, axis=1)
    noise = rng.integers(0, 256, texture.shape, dtype=np.uint8)
    assert pair_warping_error(texture, moved) < 0.25 * pair_warping_error(texture, noise)


def test_frechet_distance_matches_the_matrix_square_root_formula():
    from scipy import linalg

    from evaluation.metrics.fvd import frechet_distance

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 6)), rng.normal(1.0, 2.0, size=(50, 6)) @ rng.normal(size=(6, 6))
    mean = a.mean(0) - b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = mean @ mean + np.trace(cov_a + cov_b - 2.0 * linalg.sqrtm(cov_a @ cov_b).real)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def save_tiny_i3d(path: Path) -> Path:
    """A TorchScript stand-in for I3D with its interface: (B, 3, T, H, W) in [-1, 1] -> (B, D) features."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv3d(3, 6, kernel_size=3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool3d(1),
        torch.nn.Flatten(), torch.nn.Linear(6, 5),
    ).eval()
    torch.jit.script(net).save(str(path))
    return path


def test_fvd_is_zero_against_itself_positive_against_other_videos_and_needs_weights(tmp_path, capsys):
    from evaluation.run import main

    i3d = save_tiny_i3d(tmp_path / "i3d.pt")
    rng = np.random.default_rng(1)
    for folder, offset in (("same", 0), ("other", 1)):
        for index in range(4):
            frames = rng.integers(0, 256 if offset == 0 else 90, (8, 32, 32, 3), dtype=np.uint8)
            write_generated_video(tmp_path / folder, f"v{index}", frames, [person()] * 8, "noise")
    base = ["--metrics", "fvd", "--fvd-i3d", str(i3d), "--fvd-frames", "8", "--bootstrap", "20", "--no-report", "--quiet"]
    assert main(["--videos", str(tmp_path / "same"), "--out", str(tmp_path / "o1"), "--fvd-reference",
                 str(tmp_path / "same"), *base]) == 0
    same = json.loads((tmp_path / "o1" / "results.json").read_text())["metrics"]["fvd"]
    assert same["aggregate"]["fvd"] == pytest.approx(0.0, abs=1e-4) and same["videos"] == 4
    assert main(["--videos", str(tmp_path / "other"), "--out", str(tmp_path / "o2"), "--fvd-reference",
                 str(tmp_path / "same"), *base]) == 0
    other = json.loads((tmp_path / "o2" / "results.json").read_text())
    assert other["metrics"]["fvd"]["aggregate"]["fvd"] > 1e-3
    assert all(v["values"]["fvd"] is None for v in other["videos"])  # a set-level figure
    with pytest.raises(SystemExit):
        main(["--videos", str(tmp_path / "same"), "--out", str(tmp_path / "o3"), "--metrics", "fvd"])
    assert "fvd cannot be computed without I3D weights" in capsys.readouterr().err
