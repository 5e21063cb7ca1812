"""img2dataset's resizer with guards in front of its decoder.

img2dataset decodes with ``cv2.imdecode(..., IMREAD_UNCHANGED)`` and only then
checks sizes, which leaves three gaps this subclass closes by reading the
image header (PIL, lazily: no pixels decoded) first:

- **decompression bombs**: an image with more than ``max_image_area`` pixels
  is rejected from its header (``image area too large``) before a byte of it
  is decoded, instead of being decoded in full first;
- **16-bit images** (PNG/TIFF with 16 bits per channel): cv2 decodes them as
  ``uint16`` and img2dataset's JPEG encoder then saturates every value above
  255, storing a white image. They are scaled to 8 bits first;
- **EXIF orientation**: ``IMREAD_UNCHANGED`` ignores it, so phone photos
  would be stored on their side (and their poses with them). They are turned
  upright first.

Images with an alpha channel are matted on white here too, with the very
pixels img2dataset's own matte gives (:func:`matte_on_white`), on 8-bit
lanes instead of its float64 temporaries (the matte runs at full resolution,
before any resize: 58 ms instead of 202 ms for a 2000x1500 image here).

Images needing one of these fixes are decoded once here and handed on as a
lossless, uncompressed BMP (1 or 3 channels read back exactly, and ~100x
cheaper to write and read than even a level-1 PNG).

The header also allows a shortcut (``keep_fitting_jpeg``): a complete 8-bit
RGB or grayscale JPEG, upright, that img2dataset would neither resize nor
reject is stored **as downloaded**: no decode and no JPEG re-encode (the
pose stage decodes it once, later). Its stored bytes are then the fetched
bytes (their sha256 is the index's ``sha256``), at the source's quality
rather than ``encode_quality``. Everything else goes to img2dataset's code
untouched.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from img2dataset.resizer import Resizer, ResizeMode

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HIGH_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
EXIF_ORIENTATION = 0x0112
EXIF_HEADER_FORMATS = frozenset({"JPEG", "MPO", "WEBP", "TIFF"})
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
STORABLE_JPEG_MODES = frozenset({"RGB", "L"})
"""JPEG modes stored as downloaded (CMYK/YCCK ones are re-encoded: many readers mishandle them)."""
JPEG_END = b"\xff\xd9"
_FAILED = (None, None, None, None, None)

_ORIENT = {
    2: lambda a: cv2.flip(a, 1),
    3: lambda a: cv2.rotate(a, cv2.ROTATE_180),
    4: lambda a: cv2.flip(a, 0),
    5: lambda a: cv2.transpose(a),
    6: lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE),
    7: lambda a: cv2.rotate(cv2.transpose(a), cv2.ROTATE_180),
    8: lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


@dataclass(frozen=True)
class ImageHeader:
    """What the header says about an image."""

    width: int
    height: int
    high_bit_depth: bool
    orientation: int
    """EXIF orientation 1-8 (1: upright)."""
    format: str = ""
    """PIL's format name (``JPEG``, ``PNG``, ...)."""
    mode: str = ""
    """PIL's mode (``RGB``, ``L``, ``CMYK``, ...)."""
    alpha: bool = False
    """Has an alpha channel or a transparent palette entry."""

    @property
    def pixels(self) -> int:
        return self.width * self.height


def _orientation(image) -> int:
    """EXIF orientation from the header of formats that carry it there (PIL's PNG ``getexif`` would decode the image)."""
    if image.format not in EXIF_HEADER_FORMATS:
        return 1
    try:
        return int(image.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # a broken EXIF block: treat the image as upright
        return 1


def read_header(data: bytes) -> ImageHeader | None:
    """The header of an encoded image; None when PIL cannot identify it (img2dataset's decoder decides then)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                png_depth = data[24] if data[:8] == PNG_SIGNATURE and len(data) > 24 else 8
                high = image.mode in HIGH_DEPTH_MODES or png_depth == 16
                orientation = _orientation(image)
                kind, mode = image.format or "", image.mode
                alpha = mode in ALPHA_MODES or "transparency" in image.info
        except Image.DecompressionBombError:
            return ImageHeader(width=2**31, height=2**31, high_bit_depth=False, orientation=1)
        except Exception:
            return None
    return ImageHeader(width, height, high, orientation if orientation in _ORIENT else 1, kind, mode, alpha)


def matte_on_white(bgra: np.ndarray) -> np.ndarray:
    """The colour channels of an 8-bit 4-channel image composited on white, as img2dataset's resizer does.

    img2dataset computes ``rint(alpha / 255 * colour + 255 - alpha)`` in
    float64. The exact value's fractional part is that of
    ``alpha * colour / 255``, a multiple of 1/255, never within 0.001 of one
    half: rounding ``alpha * colour / 255`` alone (cv2, in float32 on 8-bit
    lanes) and adding ``255 - alpha`` gives the same pixel for every
    (alpha, colour) pair (a test checks all 65,536), at about a third of the
    CPU time.
    """
    alpha = cv2.merge([bgra[..., 3]] * 3)
    colour = np.ascontiguousarray(bgra[..., :3])
    return cv2.add(cv2.multiply(colour, alpha, scale=1 / 255), cv2.bitwise_not(alpha))


def normalise(data: bytes, header: ImageHeader) -> bytes | None:
    """8-bit, upright, opaque, lossless BMP bytes of ``data``; None when cv2 cannot decode it."""
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        return None
    if array.dtype == np.uint16:
        array = ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif array.dtype.kind == "f":
        array = np.rint(np.clip(np.nan_to_num(array), 0.0, 1.0) * 255).astype(np.uint8)
    elif array.dtype != np.uint8:
        return None
    if array.ndim == 3 and array.shape[2] == 4:
        array = matte_on_white(array)
    if header.orientation != 1:
        array = _ORIENT[header.orientation](array)
    ok, encoded = cv2.imencode(".bmp", array)
    return encoded.tobytes() if ok else None


class GuardedResizer(Resizer):
    """img2dataset's :class:`Resizer`, with the header guards and the stored-as-downloaded shortcut of the module
    docstring run first."""

    def __init__(self, *args, keep_fitting_jpeg: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.keep_fitting_jpeg = keep_fitting_jpeg

    def would_resize(self, width: int, height: int) -> bool:
        """Whether img2dataset's resizer would resize (or crop, or pad) an image of this size."""
        if self.resize_mode in (ResizeMode.keep_ratio, ResizeMode.center_crop):
            return not self.resize_only_if_bigger or min(width, height) > self.image_size
        if self.resize_mode in (ResizeMode.border, ResizeMode.keep_ratio_largest):
            return not self.resize_only_if_bigger or max(width, height) > self.image_size
        return False

    def storable_as_is(self, data: bytes, header: ImageHeader) -> bool:
        """True for a complete JPEG that img2dataset would store unchanged in size and would not reject."""
        return (
            self.keep_fitting_jpeg
            and self.encode_format == "jpg"
            and header.format == "JPEG"
            and header.mode in STORABLE_JPEG_MODES
            and not header.high_bit_depth
            and header.orientation == 1
            and data.rstrip(b"\0\r\n ").endswith(JPEG_END)  # a cut-short download goes to the decoder
            and min(header.width, header.height) >= max(self.min_image_size, 1)
            and max(header.width, header.height) / min(header.width, header.height) <= self.max_aspect_ratio
            and not self.would_resize(header.width, header.height)
        )

    def __call__(self, img_stream, blurring_bbox_list=None):
        img_stream.seek(0)
        data = img_stream.read()
        img_stream.seek(0)
        header = read_header(data)
        if header is not None and not self.disable_all_reencoding:
            if header.pixels > self.max_image_area:
                return (*_FAILED, "image area too large")
            if blurring_bbox_list is None and self.storable_as_is(data, header):
                return data, header.width, header.height, header.width, header.height, None
            if header.high_bit_depth or header.orientation != 1 or header.alpha:
                fixed = normalise(data, header)
                if fixed is not None:
                    return super().__call__(io.BytesIO(fixed), blurring_bbox_list)
        return super().__call__(img_stream, blurring_bbox_list)
