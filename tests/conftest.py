"""Shared fixtures: real photos of people that install with the project's packages."""

from __future__ import annotations

import os
from pathlib import Path

# cv2 must be loaded before decord in any process that uses both: decord loaded first breaks
# cv2.imdecode for PNG (its bundled libpng). datasets.clips does the same before importing decord.
import cv2  # noqa: F401
import numpy as np
import pytest


def _load_photos() -> dict[str, np.ndarray]:
    import matplotlib.cbook
    import skimage.data
    from PIL import Image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        grace = np.asarray(Image.open(handle).convert("RGB"))
    camera = skimage.data.camera()
    return {
        "astronaut": skimage.data.astronaut(),
        "camera": np.repeat(camera[..., None], 3, axis=2),
        "grace_hopper": grace,
    }


@pytest.fixture(scope="session")
def people_photos() -> dict[str, np.ndarray]:
    """Real RGB uint8 photos with one person each: scikit-image astronaut and camera, matplotlib grace_hopper."""
    return _load_photos()


@pytest.fixture(scope="session")
def scenery_photo() -> np.ndarray:
    """A real photo with no person in it (scikit-image coffee cup)."""
    import skimage.data

    return skimage.data.coffee()


@pytest.fixture(autouse=True, scope="session")
def _offline_hub():
    """Tests never reach a model hub: every model is built from a config and loaded from a local folder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    yield


@pytest.fixture(scope="module")
def one_torch_thread():
    """Two shared cores: one intra-op torch thread per test process avoids oversubscription (restored afterwards)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def make_toy_world(tmp_path_factory):
    """Factory of small 64-px toy worlds written by the real builder (pipelines/build_toy_world.py, shared shard
    writer): ``make_toy_world(images, images_per_shard, clips=1, clips_per_shard=1)`` returns the world folder."""

    def make(images: int, images_per_shard: int, clips: int = 1, clips_per_shard: int = 1) -> Path:
        from pipelines import build_toy_world

        output = tmp_path_factory.mktemp("toy") / "world"
        code = build_toy_world.main([
            "--output", str(output), "--preset", "smoke", "--size", "64", "--images", str(images),
            "--images-per-shard", str(images_per_shard), "--clips", str(clips), "--clips-per-shard", str(clips_per_shard),
            "--clip-frames", "8", "--eval-videos", "1", "--eval-long-videos", "1", "--workers", "1",
        ])  # fmt: skip
        assert code == 0
        return output

    return make
