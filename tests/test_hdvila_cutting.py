"""Cutting spans out of real encoded videos whose frames carry their own index, checked frame by frame.

The module-level helpers (``make_counter_video``, ``read_counter``,
``decode_counters``) are shared with the other HD-VILA and clip tests.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import av

from datasets.clips import CropGeometry, displayed_frames, output_times, square_geometry  # noqa: E402
from pipelines.hdvila.config import CutConfig  # noqa: E402
from pipelines.hdvila.cutting import FrameShaper, _decoded, copy_cut, exact_cut, shown_pts  # noqa: E402
from pipelines.hdvila.metadata import parse_span, parse_timestamp  # noqa: E402
from pipelines.hdvila.probe import ClipError, open_video, probe_video  # noqa: E402

COUNTER_BITS = 10


def _cells(height: int, width: int):
    """Big blocks (2 rows x 5) in a band across the middle of the central square: they survive center crops and resizes."""
    side = min(height, width)
    x0, y0 = (width - side) / 2, (height - side) / 2
    for bit in range(COUNTER_BITS):
        row, col = divmod(bit, 5)
        yield x0 + side * (0.1 + 0.16 * col), y0 + side * (0.375 + 0.125 * row), side * 0.16, side * 0.125


def draw_counter(frame: np.ndarray, index: int) -> np.ndarray:
    """Write ``index`` into ``frame`` as black (0) / white (1) blocks."""
    height, width = frame.shape[:2]
    for bit, (x, y, w, h) in enumerate(_cells(height, width)):
        frame[round(y) : round(y + h), round(x) : round(x + w)] = 255 if (index >> bit) & 1 else 0
    return frame


def read_counter(frame: np.ndarray) -> int:
    """The index drawn by :func:`draw_counter` (read from the middle of each block)."""
    height, width = frame.shape[:2]
    value = 0
    for bit, (x, y, w, h) in enumerate(_cells(height, width)):
        patch = frame[int(y + 0.3 * h) : int(y + 0.7 * h), int(x + 0.3 * w) : int(x + 0.7 * w)]
        value |= int(patch.mean() > 128) << bit
    return value


def make_counter_video(
    path: str | Path,
    frames: int,
    *,
    fps: int = 25,
    width: int = 192,
    height: int = 144,
    gop: int = 12,
    color=lambda index: (40, 90, 160),
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    faststart: bool = False,
) -> Path:
    """An H.264 mp4 whose frame ``i`` shows ``i`` (and background ``color(i)``); ``pts`` + ``time_base`` make it VFR."""
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=fps, options={"bf": "2"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        if time_base is not None:
            stream.codec_context.time_base = time_base
            stream.time_base = time_base
        for index in range(frames):
            image = np.empty((height, width, 3), np.uint8)
            image[:] = color(index)
            frame = av.VideoFrame.from_ndarray(draw_counter(image, index), format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[index], time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)


def decode_frames(data: bytes | str | Path) -> list[np.ndarray]:
    source = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    with av.open(source) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def decode_counters(data: bytes | str | Path) -> list[int]:
    return [read_counter(frame) for frame in decode_frames(data)]


@pytest.fixture(scope="module")
def counter_video(tmp_path_factory) -> Path:
    """4 s at 25 fps, 192x144, keyframe every 12 frames, B-frames."""
    return make_counter_video(tmp_path_factory.mktemp("videos") / "counter.mp4", 100)


def _cut(path, start, end, config):
    container, stream = open_video(str(path))
    try:
        info = probe_video(container, stream, vfr_tolerance=config.vfr_tolerance)
        cutter = exact_cut if config.mode == "exact" else copy_cut
        return cutter(container, stream, info, Fraction(start), Fraction(end), config), info
    finally:
        container.close()


def test_timestamps_parse_exactly_and_reject_garbage():
    assert parse_timestamp("00:01:02.345") == Fraction(62345, 1000)
    assert parse_timestamp("1:00:00.5") == 3600 + Fraction(1, 2)
    assert parse_timestamp("02.040") == Fraction(204, 100)
    assert parse_timestamp(3.5) == Fraction(7, 2)
    assert parse_span(["00:00:01.000", "00:00:02.500"]) == (1, Fraction(5, 2))
    for bad in ("", "abc", "00:61:00.000", "-1", "1:2:3:4"):
        with pytest.raises(ValueError):
            parse_timestamp(bad)
    for bad in ("00:00:01.000", ["00:00:01.000"], None, 5):
        with pytest.raises(ValueError):
            parse_span(bad)


def test_counter_survives_encoding(counter_video):
    assert decode_counters(counter_video) == list(range(100))


def test_exact_cut_at_source_rate_is_frame_exact(counter_video):
    clip, info = _cut(counter_video, "1", "2", CutConfig())
    assert not info.variable_frame_rate and info.average_rate == 25 and info.end == 4
    assert decode_counters(clip.data) == list(range(25, 50))
    assert (clip.frames, clip.width, clip.height, clip.fps) == (25, 192, 144, 25)
    # a span off the frame grid: frames on screen at start + i/25 (the frame shown at 1.01 s is frame 25)
    clip, _ = _cut(counter_video, "1.01", "1.5", CutConfig())
    assert decode_counters(clip.data) == list(range(25, 38))


@pytest.mark.parametrize("encoder", ["pyav", "ffmpeg"])
def test_exact_cut_resamples_resizes_and_crops(counter_video, encoder):
    start, end = Fraction("1.01"), Fraction("2.5")
    clip, _ = _cut(counter_video, start, end, CutConfig(fps=10, size=64, encoder=encoder))
    frames = decode_frames(clip.data)
    expected = [int(t * 25) for t in output_times(start, end, Fraction(10))]
    assert len(expected) == 15 and [read_counter(f) for f in frames] == expected
    assert frames[0].shape == (64, 64, 3) and (clip.width, clip.height, clip.fps) == (64, 64, 10)
    with av.open(io.BytesIO(clip.data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.average_rate == 10
        assert not container.streams.audio


def test_upsampling_repeats_frames(counter_video):
    clip, _ = _cut(counter_video, "0.5", "0.7", CutConfig(fps=50, size=64))
    assert decode_counters(clip.data) == [12, 13, 13, 14, 14, 15, 15, 16, 16, 17]


def test_stream_copy_is_keyframe_aligned(counter_video):
    clip, info = _cut(counter_video, "1.01", "2.5", CutConfig(mode="copy"))
    assert info.keyframe_times[:4] == (0, Fraction(12, 25), Fraction(24, 25), Fraction(36, 25))
    # from the keyframe at or before 1.01 s (frame 24) to the keyframe at or after 2.5 s (frame 72), exclusive
    assert decode_counters(clip.data) == list(range(24, 72))
    assert (clip.cut_start, clip.cut_end, clip.frames) == (Fraction(24, 25), Fraction(72, 25), 48)


def test_span_past_the_end_is_rejected_and_a_rounded_end_is_not(counter_video):
    with pytest.raises(ClipError) as caught:
        _cut(counter_video, "3.5", "4.5", CutConfig())
    assert caught.value.status == "span_past_end"
    clip, _ = _cut(counter_video, "3.5", "4.02", CutConfig())  # within one frame of the end: ms rounding
    assert decode_counters(clip.data) == list(range(87, 100))


def test_variable_frame_rate_is_detected_and_resampled(tmp_path):
    ticks = [0] + list(np.cumsum([40] * 19 + [80] * 20))  # 25 fps for 0.76 s, then 12.5 fps
    path = make_counter_video(tmp_path / "vfr.mp4", 40, pts=[int(t) for t in ticks], time_base=Fraction(1, 1000))
    clip, info = _cut(path, "0.5", "1.5", CutConfig(fps=25, size=64))
    assert info.variable_frame_rate and "differ" in info.vfr_detail
    times = output_times(Fraction(1, 2), Fraction(3, 2), Fraction(25))
    # frame k starts at 0.04 k up to frame 19 (0.76 s), then every 0.08 s
    expected = [int(t / Fraction(1, 25)) if t < Fraction(76, 100) else 19 + int((t - Fraction(76, 100)) / Fraction(8, 100)) for t in times]
    assert displayed_frames(list(info.frame_times), times).tolist() == expected
    assert decode_counters(clip.data) == expected
    assert expected[:3] == [12, 13, 14] and expected[-4:] == [26, 26, 27, 27]  # the slow part shows each frame twice


def test_rounded_timestamps_are_not_variable(tmp_path):
    ticks = [round(i * 1000 / 30) for i in range(30)]  # 30 fps in millisecond ticks: 33, 34, 33, ...
    path = make_counter_video(tmp_path / "ms.mp4", 30, pts=ticks, time_base=Fraction(1, 1000))
    container, stream = open_video(str(path))
    with container:
        assert not probe_video(container, stream, vfr_tolerance=0.05).variable_frame_rate


def test_scene_cut_check(tmp_path):
    colours = lambda i: (200, 40, 40) if i < 40 else (40, 40, 200)  # noqa: E731
    path = make_counter_video(tmp_path / "scenes.mp4", 80, color=colours)
    config = CutConfig(size=64, scene_check=True)
    with pytest.raises(ClipError) as caught:
        _cut(path, "1.2", "2.0", config)  # frames 30..49 include the change at 40
    assert caught.value.status == "scene_cut" and "frames 9 and 10" in caught.value.message
    clip, _ = _cut(path, "0.0", "1.5", config)  # counter blocks flipping are not cuts
    assert clip.frames == 38 and clip.scene_distance < config.scene_threshold


def test_crop_geometry_maps_points_like_pixels():
    image = np.zeros((90, 160, 3), np.uint8)
    image[60:64, 120:124] = 255  # a 4x4 white dot centred at (121.5, 61.5)
    geometry = CropGeometry(160, 90, 48, 48)
    out = geometry.apply(image)
    assert out.shape == (48, 48, 3) and geometry.resized == (85, 48) and geometry.offset == (18, 0)
    ys, xs = np.nonzero(out[..., 0] > 100)
    mapped = geometry.map_points(np.array([[122.0, 62.0]]))[0]  # pixel centres sit at +0.5
    assert abs(xs.mean() + 0.5 - mapped[0]) < 1.0 and abs(ys.mean() + 0.5 - mapped[1]) < 1.0
    assert square_geometry(161, 91, None).width == 160 and square_geometry(161, 91, None).height == 90
    with pytest.raises(ValueError):
        geometry.apply(np.zeros((10, 10, 3), np.uint8))


def test_cut_config_validation():
    with pytest.raises(ValueError, match="stream-copy"):
        CutConfig(mode="copy", size=256)
    with pytest.raises(ValueError, match="even"):
        CutConfig(size=255)
    with pytest.raises(ValueError):
        CutConfig(fps=0)
    with pytest.raises(ValueError):
        CutConfig(x264_preset="warp")
    assert CutConfig(fps=29.97).fps_fraction == Fraction(2997, 100)


def test_frames_not_shown_and_not_referenced_are_not_decoded(tmp_path):
    """Cutting at a lower rate skips decoding unshown B-frames; every clip of one open container stays frame-exact."""
    path = make_counter_video(tmp_path / "long_gop.mp4", 150, gop=50)
    container, stream = open_video(str(path))
    with container:
        info = probe_video(container, stream, vfr_tolerance=0.05)
        times = output_times(Fraction(1), Fraction(5), Fraction(5))
        shown = shown_pts(info, times)
        every = [time for time, _ in _decoded(container, stream, info, Fraction(1)) if time < 5]
        decoded = [time for time, _ in _decoded(container, stream, info, Fraction(1), shown) if time < 5]
        assert len(decoded) < len(every) and len(shown) == len(times) == 20
        assert {round((info.origin + t) / info.time_base) for t in decoded} >= shown
        for start, end in (("1", "5"), ("0.3", "2.9"), ("2", "6")):  # one container, clip after clip, as the builder does
            clip = exact_cut(container, stream, info, Fraction(start), Fraction(end), CutConfig(fps=5, size=64))
            expected = [int(t * 25) for t in output_times(Fraction(start), Fraction(end), Fraction(5))]
            assert decode_counters(clip.data) == expected
        assert str(stream.codec_context.skip_frame) in ("DEFAULT", "AVDiscard.DEFAULT", "Discard.DEFAULT")


def test_frame_shaper_crops_at_odd_offsets_like_the_geometry():
    """The libswscale resize + crop lands where CropGeometry.apply (OpenCV) does, for an odd crop offset too."""
    image = np.full((112, 200, 3), 60, np.uint8)
    image[50:58, 140:148] = 255  # an 8x8 white square centred at (144, 54)
    geometry = square_geometry(200, 112, 64)
    assert geometry.resized == (114, 64) and geometry.offset == (25, 0)
    frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
    shaped = FrameShaper(geometry)(frame)
    assert (shaped.width, shaped.height, shaped.format.name) == (64, 64, "yuv444p")
    ours, reference = shaped.to_ndarray(format="rgb24"), geometry.apply(frame.to_ndarray(format="rgb24"))
    assert np.abs(ours.astype(int) - reference.astype(int)).mean() < 2.0
    centre = geometry.map_points(np.array([[144.0, 54.0]]))[0]
    for picture in (ours, reference):
        weights = np.clip(picture[..., 1].astype(float) - 100, 0, None)
        ys, xs = np.mgrid[0:64, 0:64]
        assert abs((weights * (xs + 0.5)).sum() / weights.sum() - centre[0]) < 0.25
        assert abs((weights * (ys + 0.5)).sum() / weights.sum() - centre[1]) < 0.25
