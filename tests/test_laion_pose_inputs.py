"""What the LAION-Pose builder takes in, on real records without Ray: the input plan, the URL policy, the image
resizer (img2dataset's, with its guards) and the command line. The stages themselves are tests/test_laion_pose_stages.py.

Inputs are the bundled sample (pipelines/sample, made by its make_sample.py):
real photos from scikit-image/matplotlib and real bad files.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.laion_pose.cli import SAMPLE_DIR, SAMPLE_PARQUET, parse_config
from pipelines.laion_pose.config import InputConfig, ResourcesConfig
from pipelines.laion_pose.download import DOWNLOADED, status_of
from pipelines.laion_pose.inputs import plan_input, read_shard
from pipelines.laion_pose.url_policy import UrlPolicy, resolve_relative
from pipelines.laion_pose.workers import WorkerPlan, plan_workers

IMAGES = SAMPLE_DIR / "images"


# ---------------------------------------------------------------- input


def _parquet(path: Path, rows: int, start: int = 0, **extra) -> None:
    table = pa.table({"URL": [f"http://x/{i}.jpg" for i in range(start, start + rows)], "TEXT": [f"c{i}" for i in range(start, start + rows)], **extra})
    pq.write_table(table, path, row_group_size=3)


def test_plan_is_deterministic_across_files_and_reads_back_its_rows(tmp_path):
    _parquet(tmp_path / "b.parquet", 7, start=5, status=list(range(7)), AESTHETIC=[1.5] * 7)
    _parquet(tmp_path / "a.parquet", 5, start=0, status=list(range(5)), AESTHETIC=[2.5] * 5)
    config = InputConfig(path=str(tmp_path), shard_size=4)
    plan = plan_input(config)
    assert [Path(f).name for f in plan.files] == ["a.parquet", "b.parquet"]
    assert [spec.rows for spec in plan.shards] == [4, 4, 4] and plan.total_rows == 12
    assert plan.carried == ("status", "AESTHETIC") and plan.carried_as == ("input_status", "AESTHETIC")
    rows = [read_shard(spec, config, plan) for spec in plan.shards]
    assert [u for t in rows for u in t.column("url").to_pylist()] == [f"http://x/{i}.jpg" for i in range(12)]
    assert rows[1].column("input_status").to_pylist() == [4, 0, 1, 2]  # crosses the file boundary
    assert plan_input(InputConfig(path=str(tmp_path / "*.parquet"), shard_size=4)).shards == plan.shards
    limited = plan_input(InputConfig(path=str(tmp_path), shard_size=4, limit=6))
    assert [spec.rows for spec in limited.shards] == [4, 2]


def test_missing_column_is_named(tmp_path):
    pq.write_table(pa.table({"URL": ["http://x/1.jpg"], "caption": ["c"]}), tmp_path / "in.parquet")
    with pytest.raises(ValueError, match=r"\['TEXT'\] not found"):
        plan_input(InputConfig(path=str(tmp_path / "in.parquet")))
    with pytest.raises(FileNotFoundError):
        plan_input(InputConfig(path=str(tmp_path / "none*.parquet")))


# ---------------------------------------------------------------- URL policy


def test_url_policy_refuses_local_and_private_targets(tmp_path):
    public = lambda host, port: [(2, 1, 6, "", ("93.184.216.34", 0))]  # noqa: E731 - resolver for a public name
    policy = UrlPolicy(allowed_file_roots=(str(tmp_path),), resolver=public)
    refused = [
        "http://127.0.0.1:8000/a.jpg",
        "http://10.1.2.3/a.jpg",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/a.jpg",
        "http://[::ffff:192.168.0.1]/a.jpg",
        "http://100.64.0.1/a.jpg",
        "file:///etc/passwd",
        f"file://{tmp_path}/../x.jpg",
        "ftp://example.org/a.jpg",
    ]
    for url in refused:
        assert policy.check(url).status == "refused_url", url
    assert UrlPolicy().check("http://localhost:8000/a.jpg").status == "refused_url"  # the real resolver
    assert policy.check("https://example.org/a.jpg") is None
    assert policy.check("http://93.184.216.34/a.jpg") is None
    assert policy.check(f"file://{tmp_path}/a.jpg") is None
    assert policy.check("images/a.jpg").status == "download_failed"
    assert policy.check("").status == "download_failed"
    assert UrlPolicy(allow_private=True).check("file:///etc/passwd") is None
    assert resolve_relative("images/a.jpg", "file:///data/") == "file:///data/images/a.jpg"


# ---------------------------------------------------------------- resizer


def _resize(name: str, **options):
    from pipelines.laion_pose.resizer import GuardedResizer

    resizer = GuardedResizer(image_size=512, resize_mode="keep_ratio", resize_only_if_bigger=True, min_image_size=64, max_image_area=89_478_485, **options)
    return resizer(io.BytesIO((IMAGES / name).read_bytes()))


def test_resizer_guards_bombs_16bit_and_orientation(monkeypatch):
    monkeypatch.setenv("NO_ALBUMENTATIONS_UPDATE", "1")  # importing albumentations would ask PyPI otherwise
    assert _resize("bomb.png")[-1] == "image area too large"
    assert _resize("one_pixel.png")[-1] == "image too small"
    assert _resize("html_page.jpg")[-1] == "Image decoding error"
    assert _resize("truncated.jpg")[-1] == "Image decoding error"
    reference = cv2.imdecode(np.frombuffer(_resize("astronaut.jpg")[0], np.uint8), cv2.IMREAD_COLOR)
    sixteen, width, height, *_ , error = _resize("astronaut_16bit.png")
    stored = cv2.imdecode(np.frombuffer(sixteen, np.uint8), cv2.IMREAD_COLOR)
    assert error is None and (width, height) == (320, 320)
    assert abs(float(stored.mean()) - float(reference.mean())) < 6  # not the saturated white of a raw 16-bit encode
    rotated, width, height, *_ = _resize("astronaut_exif_rotated.jpg")
    assert (width, height) == (400, 512)  # stored upright: portrait, as the EXIF tag says
    upright = cv2.imdecode(np.frombuffer(rotated, np.uint8), cv2.IMREAD_COLOR)
    assert np.abs(upright.astype(int) - reference[:, 40:440].astype(int)).mean() < 12
    cmyk = cv2.imdecode(np.frombuffer(_resize("astronaut_cmyk.jpg")[0], np.uint8), cv2.IMREAD_COLOR)
    assert np.abs(cmyk.astype(int) - reference.astype(int)).mean() < 12
    alpha = cv2.imdecode(np.frombuffer(_resize("astronaut_alpha.png")[0], np.uint8), cv2.IMREAD_UNCHANGED)
    assert alpha.shape == (384, 384, 3) and (alpha[:, :40] == 255).all()  # transparent bands matted white


def test_alpha_matte_gives_img2dataset_pixels(monkeypatch):
    monkeypatch.setenv("NO_ALBUMENTATIONS_UPDATE", "1")
    from PIL import Image
    from img2dataset.resizer import Resizer

    from pipelines.laion_pose.resizer import GuardedResizer, matte_on_white

    alpha, colour = np.meshgrid(np.arange(256), np.arange(256))  # every (alpha, colour) pair
    bgra = np.stack([colour, np.roll(colour, 7, 0), 255 - colour, alpha], -1).astype(np.uint8)
    a = bgra[..., 3:]
    img2dataset_matte = np.rint((a / 255 * bgra[..., :3] + 255 - a).clip(0, 255)).astype(np.uint8)  # its formula
    assert np.array_equal(matte_on_white(bgra), img2dataset_matte)

    rng = np.random.default_rng(0)
    options = dict(image_size=256, resize_mode="keep_ratio", resize_only_if_bigger=True, min_image_size=64)
    for mode, size in (("RGBA", (384, 300)), ("LA", (300, 200)), ("P", (200, 200))):
        pixels = rng.integers(0, 256, (size[1], size[0], len(mode)), dtype=np.uint8).squeeze()
        encoded = io.BytesIO()
        if mode == "P":  # a palette whose entry 0 is transparent
            Image.fromarray(pixels, "L").convert("P").save(encoded, "PNG", transparency=0)
        else:
            Image.fromarray(pixels, mode).save(encoded, "PNG")
        ours = GuardedResizer(**options)(io.BytesIO(encoded.getvalue()))
        assert ours[-1] is None and ours == Resizer(**options)(io.BytesIO(encoded.getvalue())), mode  # same bytes, sizes


def test_fitting_jpegs_are_stored_as_downloaded(monkeypatch):
    monkeypatch.setenv("NO_ALBUMENTATIONS_UPDATE", "1")
    for name in ("astronaut.jpg", "camera_gray.jpg", "rocket.jpg"):  # RGB and grayscale JPEGs within 512 px
        data = (IMAGES / name).read_bytes()
        stored, width, height, original_width, original_height, error = _resize(name)
        assert stored == data and error is None
        assert (width, height) == (original_width, original_height) == cv2.imdecode(np.frombuffer(data, np.uint8), 0).shape[::-1]
    assert _resize("astronaut.jpg", keep_fitting_jpeg=False)[0] != (IMAGES / "astronaut.jpg").read_bytes()  # the old way
    for name in ("astronaut_cmyk.jpg", "astronaut_exif_rotated.jpg", "astronaut_alpha.png"):  # need img2dataset's work
        assert _resize(name)[0] != (IMAGES / name).read_bytes(), name
    from pipelines.laion_pose.resizer import GuardedResizer

    smaller = GuardedResizer(image_size=256, resize_mode="keep_ratio", resize_only_if_bigger=True)
    shrunk, width, height, *_ = smaller(io.BytesIO((IMAGES / "rocket.jpg").read_bytes()))
    assert min(width, height) == 256 and cv2.imdecode(np.frombuffer(shrunk, np.uint8), 1).shape[:2] == (height, width)


def _header_only_png(width: int, height: int) -> bytes:
    """A PNG with a valid header of the given size and no pixel data: only a header-only check can size it."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_bomb_is_refused_from_its_header_alone(monkeypatch):
    monkeypatch.setenv("NO_ALBUMENTATIONS_UPDATE", "1")
    from pipelines.laion_pose.resizer import GuardedResizer

    resizer = GuardedResizer(image_size=512, resize_mode="keep_ratio", resize_only_if_bigger=True, max_image_area=89_478_485)
    for width, height in ((10_000, 9_000), (100_000, 100_000)):  # above PIL's warning and its error limit
        assert resizer(io.BytesIO(_header_only_png(width, height)))[-1] == "image area too large"
    assert resizer(io.BytesIO(_header_only_png(600, 400)))[-1] == "Image decoding error"  # small: decoded, and empty


def test_img2dataset_errors_map_to_statuses():
    assert status_of("success", None) == DOWNLOADED
    assert status_of("failed_to_download", "HTTP Error 404: Not Found") == "download_failed"
    assert status_of("failed_to_download", "Use of image disallowed by X-Robots-Tag directive") == "opted_out"
    assert status_of("failed_to_resize", "image too small") == "image_too_small"
    assert status_of("failed_to_resize", "image area too large") == "image_too_large"
    assert status_of("failed_to_resize", "Image decoding error") == "not_an_image"


# ---------------------------------------------------------------- command line


def test_cli_maps_flags_onto_configs(tmp_path):
    sample = parse_config([])
    assert sample.input.path == str(SAMPLE_PARQUET) and sample.output.endswith("outputs/laion_pose_sample")
    assert sample.download.allowed_file_roots == (str(SAMPLE_DIR),) and not sample.download.allow_private_urls
    assert sample.stage.pose.backend == "mediapipe"
    config = parse_config(
        ["--input", "in/*.parquet", "--output", str(tmp_path), "--pose-backend", "mmpose", "--pose-checkpoint", "w.pth",
         "--allow-private-urls", "--shard-size", "50", "--keypoint-threshold", "0.4", "--pose-workers", "3", "--ray-address", "auto"]
    )
    assert config.input.path.endswith("in/*.parquet") and config.input.shard_size == 50
    assert config.stage.pose.backend == "mmpose" and config.stage.pose.options.pose_checkpoint == "w.pth"
    assert config.stage.visibility.keypoint_threshold == config.stage.skeleton.threshold == 0.4
    assert config.download.allow_private_urls and config.resources.pose_workers == 3 and config.ray.address == "auto"
    assert sample.download.keep_fitting_jpeg and not parse_config(["--keep-fitting-jpeg", "false"]).download.keep_fitting_jpeg
    with pytest.raises(SystemExit):
        parse_config(["--keep-fitting-jpeg", "maybe"])
    with pytest.raises(ValueError, match="needs pose weights"):
        parse_config(["--input", "x.parquet", "--output", "o", "--pose-backend", "mmpose"])
    with pytest.raises(ValueError, match="--output is required"):
        parse_config(["--input", "x.parquet"])


def test_worker_plan_fits_the_cluster():
    assert plan_workers(ResourcesConfig(), 2, 0, shards=10) == WorkerPlan(1, 1.0, 0.0, 2, 0.5)
    assert plan_workers(ResourcesConfig(pose_workers=2, pose_cpus=0.75), 2, 0, shards=10) == WorkerPlan(2, 0.75, 0.0, 1, 0.5)
    assert plan_workers(ResourcesConfig(), 64, 8, shards=100) == WorkerPlan(8, 1.0, 1.0, 16, 0.5)
    assert plan_workers(ResourcesConfig(), 64, 8, shards=3).pose_workers == 3
    with pytest.raises(ValueError, match="lower --pose-workers"):
        plan_workers(ResourcesConfig(pose_workers=2), 2, 0, shards=10)
    with pytest.raises(ValueError, match="GPU"):
        plan_workers(ResourcesConfig(pose_workers=2, pose_gpus=1), 8, 1, shards=10)
