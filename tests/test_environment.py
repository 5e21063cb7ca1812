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
