"""``python -m training.generate`` on a wrong --model or an empty pose video: one line, exit 2, nothing generated."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from follow_your_pose.export import ModelFolderError, resolve_model_folder
from training.generate import main


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    from follow_your_pose.tiny import save_tiny_sd

    return save_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture(scope="module")
def poses(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("poses")
    for index in range(2):
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / f"{index:03d}.png")
    return folder


def refusal(capsys, model: Path, pose: Path, out: Path) -> str:
    status = main(["--model", str(model), "--prompt", "a person", "--pose", str(pose), "--out", str(out), "--steps", "1"])
    err = capsys.readouterr().err.strip()
    assert status == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not out.exists()
    return err


def test_a_plain_stable_diffusion_folder_is_named_as_such(tiny_sd, poses, tmp_path, capsys):
    message = refusal(capsys, tiny_sd, poses, tmp_path / "out.mp4")
    assert "StableDiffusionPipeline" in message and "not a Follow-Your-Pose model" in message and "--base" in message


def test_an_unrelated_base_json_or_an_empty_folder_is_refused(poses, tmp_path, capsys):
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "base.json").write_text(json.dumps({"color": "blue"}))
    assert "not an export's" in refusal(capsys, stranger, poses, tmp_path / "a.mp4")
    (tmp_path / "empty").mkdir()
    assert "holds no model" in refusal(capsys, tmp_path / "empty", poses, tmp_path / "b.mp4")
    assert "no such folder" in refusal(capsys, tmp_path / "missing", poses, tmp_path / "c.mp4")


def test_a_training_run_folder_means_its_exported_model(tmp_path):
    model = tmp_path / "run" / "model"
    (model / "pose_encoder").mkdir(parents=True)
    (model / "base.json").write_text(json.dumps({"pretrained": "CompVis/stable-diffusion-v1-4", "revision": None}))
    assert resolve_model_folder(tmp_path / "run") == ("export", model)
    with pytest.raises(ModelFolderError, match="not readable JSON"):
        (model / "base.json").write_text("{not json")
        resolve_model_folder(model)


def test_a_pose_video_without_frames_is_one_line(tiny_sd, tmp_path):
    import av

    empty = tmp_path / "empty.mp4"
    with av.open(str(empty), "w") as container:  # a real mp4 (header, one H.264 track) holding no frame
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()
    assert empty.stat().st_size > 0
    model = tmp_path / "model"
    (model / "pose_encoder").mkdir(parents=True)
    (model / "base.json").write_text(json.dumps({"pretrained": str(tiny_sd), "revision": None}))
    result = subprocess.run(
        [sys.executable, "-m", "training.generate", "--model", str(model), "--prompt", "a person", "--pose", str(empty),
         "--out", str(tmp_path / "out.mp4")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert "empty.mp4" in message and "does not exist" not in message and not (tmp_path / "out.mp4").exists()
