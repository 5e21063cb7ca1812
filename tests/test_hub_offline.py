"""A hub id with no network and HF_HUB_OFFLINE unset fails in seconds, saying to pass a local folder.

This machine reaches no model hub, so every command below meets the real failure; the hub libraries alone would
retry for minutes. Each command is a real process with ``HF_HUB_OFFLINE`` removed from its environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from datasets.hub import HubUnreachableError, check_reachable

LIMIT = 10.0


def run_online(*argv: str) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, env=env, timeout=120)
    return result, time.monotonic() - start


def assert_fails_fast(result: subprocess.CompletedProcess, seconds: float) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "cannot be reached" in result.stderr and "local folder" in result.stderr
    assert seconds < LIMIT, f"took {seconds:.1f} s"


def test_evaluation_with_the_default_clip_id(tmp_path):
    (tmp_path / "videos").mkdir()
    result, seconds = run_online("evaluation.run", "--videos", str(tmp_path / "videos"), "--out", str(tmp_path / "eval"), "--metrics", "clip")
    assert_fails_fast(result, seconds)
    assert "--clip-model openai/clip-vit-base-patch32" in result.stderr


def test_generation_with_a_model_whose_base_is_a_hub_id(tmp_path):
    model = tmp_path / "model"
    (model / "pose_encoder").mkdir(parents=True)
    (model / "base.json").write_text(json.dumps({"pretrained": "CompVis/stable-diffusion-v1-4", "revision": None}))
    (tmp_path / "poses").mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "poses" / "000.png")
    result, seconds = run_online(
        "training.generate", "--model", str(model), "--prompt", "a person", "--pose", str(tmp_path / "poses"),
        "--out", str(tmp_path / "out.mp4"),
    )  # fmt: skip
    assert_fails_fast(result, seconds)


def test_generation_with_a_lora_hub_id(tmp_path):
    from follow_your_pose.tiny import save_tiny_sd

    base = save_tiny_sd(tmp_path / "sd")
    model = tmp_path / "model"
    (model / "pose_encoder").mkdir(parents=True)
    (model / "base.json").write_text(json.dumps({"pretrained": str(base), "revision": None}))
    (tmp_path / "poses").mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "poses" / "000.png")
    result, seconds = run_online(
        "training.generate", "--model", str(model), "--prompt", "a person", "--pose", str(tmp_path / "poses"),
        "--lora", "someone/style-lora", "--out", str(tmp_path / "out.mp4"),
    )  # fmt: skip
    assert_fails_fast(result, seconds)
    assert "--lora someone/style-lora" in result.stderr


def test_converting_from_hub_ids(tmp_path):
    result, seconds = run_online("training.convert_official", "--checkpoint", "YueMafighting/FollowYourPose_v1", "--output", str(tmp_path / "m"))
    assert_fails_fast(result, seconds)


def test_training_with_a_hub_base(monkeypatch):
    from training.base_model import resolve_base
    from training.config import ConfigError
    from training.presets import preset

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.monotonic()
    with pytest.raises(ConfigError, match="--model.pretrained CompVis/stable-diffusion-v1-4.*local folder"):
        resolve_base(preset(1, "paper"), is_main=True)
    assert time.monotonic() - start < LIMIT


def test_local_folders_and_the_offline_switch_pass_untouched(tmp_path, monkeypatch):
    assert check_reachable(str(tmp_path), flag="--x") == str(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert check_reachable("org/model", flag="--x") == "org/model"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(HubUnreachableError, match="127.0.0.1"):
        check_reachable("org/model", flag="--x")
