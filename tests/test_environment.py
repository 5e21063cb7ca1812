"""The project's top-level ``datasets`` package shadows Hugging Face ``datasets``.

These tests prove the libraries we build on still import and work beside it,
in a fresh interpreter each (so nothing imported by other tests hides a problem).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin", "RAY_USAGE_STATS_ENABLED": "0"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_datasets_is_ours_and_hf_libraries_work_beside_it():
    out = run_python(
        "import datasets, transformers, diffusers, accelerate\n"
        "import datasets.laion_pose\n"
        "print(datasets.__file__)\n"
        "from transformers import CLIPTextConfig, CLIPTextModel\n"
        "import torch\n"
        "m = CLIPTextModel(CLIPTextConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=50))\n"
        "print(tuple(m(torch.tensor([[1, 2, 3]])).last_hidden_state.shape))\n"
        "from diffusers import DDIMScheduler\n"
        "s = DDIMScheduler(); s.set_timesteps(5); print(len(s.timesteps))\n"
        "from accelerate import Accelerator\n"
        "print(Accelerator(cpu=True).device)\n"
    )
    lines = out.split()
    assert lines[0] == str(ROOT / "datasets" / "__init__.py")
    assert lines[1:] == ["(1,", "3,", "16)", "5", "cpu"]


def test_ray_data_runs_beside_our_datasets_package(tmp_path):
    out = run_python(
        "import datasets.laion_pose, ray\n"
        "ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)\n"
        "ds = ray.data.range(10).map_batches(lambda b: {'id': b['id'] * 2})\n"
        f"ds.write_parquet({str(tmp_path)!r})\n"
        f"print(sorted(ray.data.read_parquet({str(tmp_path)!r}).to_pandas()['id'].tolist()))\n"
        "ray.shutdown()\n"
    )
    assert out.strip().splitlines()[-1] == str([i * 2 for i in range(10)])


def test_reading_clips_with_decord_leaves_cv2_png_decoding_working():
    # decord imported before cv2 breaks cv2.imdecode for PNG in that process (its bundled libpng);
    # datasets.clips imports cv2 first, so a training process that reads clips still decodes PNGs.
    out = run_python(
        "import numpy as np, av, io\n"
        "from datasets.clips import decode_frames\n"
        "buffer = io.BytesIO()\n"
        "with av.open(buffer, 'w', format='mp4') as out:\n"
        "    stream = out.add_stream('libx264', rate=8); stream.width = stream.height = 32; stream.pix_fmt = 'yuv420p'\n"
        "    for i in range(4):\n"
        "        out.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((32, 32, 3), 60 * i, np.uint8), format='rgb24')))\n"
        "    out.mux(stream.encode())\n"
        "frames = decode_frames(buffer.getvalue(), np.arange(4), decoder='decord')\n"
        "import cv2\n"
        "ok, png = cv2.imencode('.png', np.zeros((8, 8, 3), np.uint8))\n"
        "print(frames.shape, cv2.imdecode(png, cv2.IMREAD_UNCHANGED) is not None)\n"
    )
    assert out.strip().splitlines()[-1] == "(4, 32, 32, 3) True"
