"""Make the bundled LAION-Pose sample: ``laion_sample.parquet`` and the images it points to.

    python pipelines/sample/make_sample.py          # rewrites pipelines/sample/

Every picture comes from a package the project installs (scikit-image's
astronaut, camera, coffee, chelsea, rocket; matplotlib's grace_hopper), so the
sample is reproducible offline. The rows cover the cases a LAION crawl meets:
photos of people (also as grayscale, CMYK, 16-bit, alpha PNG, EXIF-rotated
JPEG), person-less photos, and bad rows (truncated JPEG, HTML saved as .jpg,
1x1 image, decompression-bomb sized PNG, missing file, URLs the default policy
refuses). Image URLs are relative to this folder (the job joins them to it);
the columns mimic LAION-Aesthetics (``URL``, ``TEXT``, ``WIDTH``, ``HEIGHT``,
``similarity``, ``hash``, ``punsafe``, ``pwatermark``, ``AESTHETIC_SCORE``).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

HERE = Path(__file__).resolve().parent
IMAGES = HERE / "images"
PARQUET = HERE / "laion_sample.parquet"
ODD_CAPTION = "Astronaut \u5b87\u5b99\u98db\u884c\u58eb \U0001f469\u200d\U0001f680 e\u0301t\u00e9 \u05e9\u05dc\u05d5\u05dd \u200b\ufeff tab\tnewline\n end"


def _photos() -> dict[str, np.ndarray]:
    import matplotlib.cbook
    import skimage.data

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        grace = np.asarray(Image.open(handle).convert("RGB"))
    return {
        "astronaut": skimage.data.astronaut(),
        "camera": skimage.data.camera(),
        "grace_hopper": grace,
        "coffee": skimage.data.coffee(),
        "chelsea": skimage.data.chelsea(),
        "rocket": skimage.data.rocket(),
    }


def _jpeg(array: np.ndarray, quality: int = 85, **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality, **save)
    return buffer.getvalue()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _files(photos: dict[str, np.ndarray]) -> dict[str, bytes]:
    astronaut = photos["astronaut"]
    rgba = Image.fromarray(astronaut).convert("RGBA").resize((384, 384), Image.LANCZOS)
    alpha = np.full((384, 384), 255, np.uint8)
    alpha[:, :48] = alpha[:, -48:] = 0  # transparent side bands, matted white by the resizer
    rgba.putalpha(Image.fromarray(alpha))
    small = cv2.resize(astronaut, (320, 320), interpolation=cv2.INTER_AREA)
    ok, sixteen = cv2.imencode(".png", (small.astype(np.uint16) * 257)[..., ::-1])  # 48-bit RGB PNG
    if not ok:
        raise RuntimeError("cv2 could not encode the 16-bit PNG")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    portrait = astronaut[:, 40:440]  # 512 high, 400 wide: the stored orientation shows in the size
    sideways = np.ascontiguousarray(np.rot90(portrait, 1))  # stored turned 90 degrees counter-clockwise
    full = _jpeg(astronaut)
    return {
        "astronaut.jpg": full,
        "astronaut_mirrored.jpg": _jpeg(np.ascontiguousarray(astronaut[:, ::-1])),
        "astronaut_cmyk.jpg": _cmyk_jpeg(astronaut),
        "astronaut_alpha.png": _png(rgba),
        "astronaut_16bit.png": sixteen.tobytes(),
        "astronaut_exif_rotated.jpg": _jpeg(sideways, exif=exif),
        "camera_gray.jpg": _jpeg(photos["camera"]),
        "grace_hopper.jpg": _jpeg(photos["grace_hopper"]),
        "coffee.jpg": _jpeg(photos["coffee"]),
        "chelsea.jpg": _jpeg(photos["chelsea"]),
        "rocket.jpg": _jpeg(photos["rocket"]),
        "truncated.jpg": full[: len(full) * 6 // 10],
        "html_page.jpg": b"<!doctype html><html><head><title>404</title></head><body>Not found</body></html>\n",
        "one_pixel.png": _png(Image.new("RGB", (1, 1), (255, 0, 0))),
        "bomb.png": _png(Image.new("1", (10_000, 9_000))),
    }


def _cmyk_jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).convert("CMYK").save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


# (URL relative to this folder or absolute, caption)
ROWS = [
    ("images/astronaut.jpg", "An astronaut in a white spacesuit holding a helmet, portrait photo"),
    ("images/camera_gray.jpg", "Black and white photo of a man with a camera on a tripod in a park"),
    ("images/grace_hopper.jpg", "Portrait of Rear Admiral Grace Hopper in uniform"),
    ("images/astronaut_mirrored.jpg", ODD_CAPTION),
    ("images/astronaut_cmyk.jpg", "CMYK print scan of an astronaut portrait"),
    ("images/astronaut_alpha.png", "Cut-out astronaut on a transparent background"),
    ("images/astronaut_16bit.png", "16-bit PNG of an astronaut"),
    ("images/astronaut_exif_rotated.jpg", "Phone photo of an astronaut (EXIF rotated)"),
    ("images/coffee.jpg", "A cup of coffee on a saucer"),
    ("images/chelsea.jpg", "A tabby cat looking to the side"),
    ("images/rocket.jpg", "A rocket on its launch pad"),
    ("images/truncated.jpg", "A photo whose download was cut short"),
    ("images/html_page.jpg", "A page that is not an image"),
    ("images/one_pixel.png", "A tracking pixel"),
    ("images/bomb.png", "A decompression bomb"),
    ("images/does_not_exist.jpg", "A dead link"),
    ("http://127.0.0.1:9/internal.jpg", "An internal service the downloader must not reach"),
    ("file:///etc/hostname", "A local file outside the sample folder"),
]


def make() -> None:
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # bomb.png is one on purpose
    IMAGES.mkdir(parents=True, exist_ok=True)
    files = _files(_photos())
    sizes = {}
    for name, data in files.items():
        (IMAGES / name).write_bytes(data)
        sizes[name] = Image.open(io.BytesIO(data)).size if name not in ("html_page.jpg", "truncated.jpg") else (None, None)
    rng = np.random.default_rng(0)
    urls = [url for url, _ in ROWS]
    table = pa.table(
        {
            "URL": urls,
            "TEXT": [caption for _, caption in ROWS],
            "WIDTH": pa.array([sizes.get(u.rsplit("/", 1)[-1], (None, None))[0] for u in urls], pa.int64()),
            "HEIGHT": pa.array([sizes.get(u.rsplit("/", 1)[-1], (None, None))[1] for u in urls], pa.int64()),
            "similarity": rng.uniform(0.28, 0.42, len(ROWS)).round(4),
            "hash": pa.array([int.from_bytes(hashlib.sha1(u.encode()).digest()[:8], "little", signed=True) for u in urls]),
            "punsafe": rng.uniform(0.0, 0.1, len(ROWS)).round(5),
            "pwatermark": rng.uniform(0.0, 0.5, len(ROWS)).round(5),
            "AESTHETIC_SCORE": rng.uniform(5.0, 7.0, len(ROWS)).round(3),
        }
    )
    pq.write_table(table, PARQUET)
    total = sum(p.stat().st_size for p in IMAGES.iterdir()) + PARQUET.stat().st_size
    print(f"wrote {len(ROWS)} rows to {PARQUET} and {len(files)} images ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    make()
