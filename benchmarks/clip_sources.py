"""The synthetic video sources the clip benchmarks cut (``bench_hdvila``, ``bench_captioning``): H.264 sources with
moving gradients and noise, a large VP9 source made with the ffmpeg CLI, and HD-VILA-style metadata tiling them with
clips."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VP9_SOURCE = "vp9-1768x994-30fps-7.7s.webm"


@dataclass(frozen=True, kw_only=True)
class SourcesConfig:
    """The synthetic 640x360 30 fps H.264 sources a clip benchmark makes (:func:`make_sources`), and its clip length."""

    videos: int = 3
    """Source videos made for the run."""
    seconds: int = 20
    """Length of each source video."""
    clip_seconds: int = 5
    """Length of each clip cut from them (:func:`write_metadata` tiles the sources with clips)."""

    def __post_init__(self) -> None:
        if min(self.videos, self.seconds, self.clip_seconds) < 1 or self.seconds < self.clip_seconds:
            raise ValueError("sources: counts must be positive and seconds at least clip_seconds")

    @property
    def clips(self) -> int:
        return self.videos * (self.seconds // self.clip_seconds)


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return shutil.which("ffmpeg") or imageio_ffmpeg.get_ffmpeg_exe()


def make_sources(folder: Path, videos: int, seconds: int) -> list[str]:
    """Moving gradients with noise (so the encoder has work to do), 640x360 at 30 fps, keyframe every 2 s."""
    from datasets.video_io import VideoWriter

    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:360, 0:640]
    ids = []
    for v in range(videos):
        video_id = f"bench{v}"
        with VideoWriter(folder / f"{video_id}.mp4", 30, crf=23, preset="veryfast", options={"g": "60"}) as writer:
            for i in range(seconds * 30):
                image = np.stack([(xs + 3 * i) % 256, (ys + 2 * i + 40 * v) % 256, (xs + ys - i) % 256], axis=2).astype(np.uint8)
                writer.write(np.clip(image.astype(np.int16) + rng.integers(-8, 9, image.shape), 0, 255).astype(np.uint8))
        ids.append(video_id)
    return ids


def vp9_source() -> Path:
    """A 1768x994 30 fps 7.7 s VP9 webm (testsrc2 overlaid with noise, keyframe every 5 s), made once and cached."""
    path = Path(tempfile.gettempdir()) / "bench-hdvila-cache" / VP9_SOURCE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.webm")
        subprocess.run(
            [ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=1768x994:rate=30",
             "-f", "lavfi", "-i", "nullsrc=size=1768x994:rate=30,geq=random(1)*255:128:128",
             "-filter_complex", "[0][1]blend=all_mode=overlay:all_opacity=0.15,format=yuv420p", "-t", "7.7",
             "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "4M", "-g", "150", str(partial)],
            check=True,
        )  # fmt: skip
        partial.replace(path)
    return path


def write_metadata(path: Path, ids: list[str], seconds: int, clip_seconds: int) -> None:
    def stamp(t: int) -> str:
        return f"00:{t // 60:02d}:{t % 60:02d}.000"

    with open(path, "w") as handle:
        for video_id in ids:
            spans = [[stamp(t), stamp(t + clip_seconds)] for t in range(0, seconds - clip_seconds + 1, clip_seconds)]
            clips = [{"clip_id": f"{video_id}.{i}", "span": span} for i, span in enumerate(spans)]
            handle.write(json.dumps({"video_id": video_id, "url": "", "clip": clips}) + "\n")
