"""datasets/video_io.py on real encoded videos: round trips within codec tolerance, frame counts, stride and limit,
GIF, atomic writes, in-memory bytes and the errors a caller turns into rejection rows."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from datasets import video_io
from datasets.video_io import VideoError, VideoWriter


def moving_square(frames: int = 10, height: int = 48, width: int = 64) -> np.ndarray:
    """Smooth frames (a bright square drifting over a gradient) that x264 keeps close at crf 18."""
    ys, xs = np.mgrid[0:height, 0:width]
    video = np.zeros((frames, height, width, 3), np.uint8)
    for t in range(frames):
        video[t, ..., 0] = (xs * 3 + t * 4) % 256
        video[t, ..., 1] = ys * 4
        video[t, ..., 2] = 90
        video[t, 10:26, 4 + 3 * t : 20 + 3 * t] = (240, 240, 40)
    return video


def nearest(frame: np.ndarray, frames: np.ndarray) -> int:
    """Index of the source frame a decoded frame is closest to."""
    return int(np.argmin([np.abs(frame.astype(int) - f).mean() for f in frames]))


def test_write_and_read_round_trip(tmp_path):
    frames = moving_square()
    path = video_io.write_video(frames, tmp_path / "a.mp4", 8)
    decoded, fps = video_io.read_video(path)
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8 and fps == 8.0
    assert np.abs(decoded.astype(int) - frames).mean() < 4
    assert [nearest(frame, frames) for frame in decoded] == list(range(len(frames)))
    assert video_io.count_frames(path) == len(frames) == len(list(video_io.iter_frames(path)))
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]


def test_stride_and_limit(tmp_path):
    frames = moving_square(12)
    path = video_io.write_video(frames, tmp_path / "a.mp4", Fraction(30000, 1001))
    every_third, fps = video_io.read_video(path, stride=3)
    assert len(every_third) == 4 and fps == pytest.approx(30000 / 1001)
    assert [nearest(frame, frames) for frame in every_third] == [0, 3, 6, 9]
    assert len(video_io.read_video(path, stride=2, limit=4)[0]) == 4
    assert np.array_equal(video_io.read_video(path, stride=2, limit=4)[0], video_io.read_video(path, stride=2)[0][:4])


def test_in_memory_bytes_and_frame_indices():
    frames = moving_square(9)
    data = video_io.encode_mp4(frames, 8, crf=12)
    assert isinstance(data, bytes) and video_io.count_frames(data) == 9
    decoded, _ = video_io.read_video(data)
    assert np.abs(decoded.astype(int) - frames).mean() < 4
    picked = video_io.decode_frames(data, np.array([1, 4, 8]), decoder="pyav")
    assert np.array_equal(picked, decoded[[1, 4, 8]])
    with pytest.raises(ValueError, match="fewer frames"):
        video_io.decode_frames(data, np.array([2, 9]), decoder="pyav")


def test_faststart_bytes_put_the_index_first():
    data = video_io.encode_mp4(moving_square(4), 8, faststart=True, options={"g": "2"})
    assert data.index(b"moov") < data.index(b"mdat") and video_io.count_frames(data) == 4


def test_streaming_writer_checks_frames(tmp_path):
    with pytest.raises(ValueError, match="even"):
        VideoWriter(tmp_path / "odd.mp4", 8, size=(33, 32))
    writer = VideoWriter(None, 8, size=(64, 48))
    with pytest.raises(ValueError, match="48x64|64"):
        writer.write(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        writer.write(np.zeros((48, 64, 3), np.float32))
    writer.abort()
    with pytest.raises(ValueError, match="no frames"):
        video_io.write_video(np.zeros((0, 48, 64, 3), np.uint8), tmp_path / "empty.mp4", 8)
    assert list(tmp_path.iterdir()) == []


def test_no_file_at_the_final_path_when_encoding_fails_half_way(tmp_path):
    frames = list(moving_square(6))
    frames[3] = np.zeros((32, 32, 3), np.uint8)  # a frame of the wrong size, half-way through
    with pytest.raises(ValueError):
        video_io.write_video(np.array(frames, dtype=object), tmp_path / "a.mp4", 8)
    with pytest.raises(RuntimeError, match="stop"):
        with VideoWriter(tmp_path / "b.mp4", 8) as writer:
            writer.write(moving_square(1)[0])
            raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []  # neither the video nor its temporary file


def test_existing_file_survives_a_failed_rewrite(tmp_path):
    path = video_io.write_video(moving_square(3), tmp_path / "a.mp4", 8)
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with VideoWriter(path, 8) as writer:
            writer.write(moving_square(1)[0])
            raise RuntimeError("stop")
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["a.mp4"]


def test_gif(tmp_path):
    frames = (np.arange(4)[:, None, None, None] * 60 + np.zeros((4, 16, 20, 3))).astype(np.uint8)
    path = video_io.write_video(frames, tmp_path / "a.gif", 10)
    decoded, _ = video_io.read_video(path)
    assert decoded.shape == frames.shape and np.abs(decoded.astype(int) - frames).max() <= 2
    from PIL import Image

    with Image.open(path) as image:
        assert image.n_frames == 4 and image.info["duration"] == 100 and image.info["loop"] == 0
    video_io.write_gif(frames, tmp_path / "b.gif", 100, min_frame_ms=20)
    with Image.open(tmp_path / "b.gif") as image:
        assert image.info["duration"] == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif", "b.gif"]


def test_errors_name_the_source(tmp_path):
    with pytest.raises(VideoError, match="does not exist"):
        video_io.read_video(tmp_path / "missing.mp4")
    (tmp_path / "garbage.mp4").write_bytes(b"not a video at all" * 10)
    with pytest.raises(VideoError, match="garbage.mp4"):
        video_io.read_video(tmp_path / "garbage.mp4")
    with pytest.raises(VideoError):
        video_io.count_frames(b"not a video")
    assert issubclass(VideoError, ValueError)


def test_importing_the_module_loads_no_codec():
    import subprocess
    import sys

    code = "import sys, datasets.video_io; print('av' in sys.modules, 'PIL' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split() == ["False", "False"]
