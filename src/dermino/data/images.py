"""Robust image decoding used everywhere images are read.

Each failure mode (missing, zero-byte, not an image, truncated, decompression bomb …)
raises ``ImageReadError`` naming the file, so a bad file is never silently skipped or
turned into a black square. Each odd-but-valid encoding is converted to plain 8-bit RGB
the way a viewer would show it:

- EXIF orientation is applied (phone photos are stored sideways with a rotate tag).
- CMYK (print workflows) and palette images are converted by PIL.
- Grayscale is replicated to 3 channels.
- 16/32-bit integer images are rescaled to 8 bits (``convert('RGB')`` would clip
  everything above 255 to white).
- Transparency (RGBA, LA, palette with transparency) is composited on WHITE: the colour
  under fully transparent pixels is arbitrary (often black), and black next to a lesion
  reads as pigment or the dark dermoscope vignette; white is what the image looks like in
  any viewer or on a report page, and is far from every lesion colour.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

log = logging.getLogger(__name__)

#: Refuse images larger than this many pixels before decoding (decompression bombs).
#: 100 MP is ~4x the largest dermoscopy/clinical photos we know of.
MAX_PIXELS = 100_000_000

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(OSError):
    """An image file could not be decoded; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def read_rgb(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode ``path`` to an 8-bit RGB PIL image with EXIF orientation applied.

    Raises ``ImageReadError`` (naming ``path``) for any file that cannot be read fully.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "file not found")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    return _decode(path, path, max_pixels)


def decode_rgb(data: bytes, name: str = "<upload>", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """``read_rgb`` for bytes in memory (uploads): same checks, nothing written to disk."""
    if not data:
        raise ImageReadError(name, "empty file (0 bytes)")
    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(source: str | Path | io.BytesIO, name: str | Path, max_pixels: int) -> Image.Image:
    try:
        with Image.open(source) as im:
            w, h = im.size
            if w * h > max_pixels:
                # checked from the header, before any pixel is decoded
                raise ImageReadError(
                    name, f"decompression bomb: {w}x{h} = {w * h:,} pixels > limit {max_pixels:,}"
                )
            im.load()  # raises on truncated data (LOAD_TRUNCATED_IMAGES stays False)
            im = ImageOps.exif_transpose(im)
            return to_rgb(im)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError(name, f"decompression bomb: {exc}") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageReadError(name, "not an image (unknown format)") from exc
    except Exception as exc:  # PIL raises many types; name the file whatever it was
        raise ImageReadError(name, f"{type(exc).__name__}: {exc}") from exc


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (see module docstring for the choices)."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(im), im.mode)).convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def _to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    arr = arr.astype(np.float64)
    if mode == "F":
        top = 1.0 if arr.size and np.nanmax(arr) <= 1.0 else 255.0
    else:
        # 16-bit data (also PIL's 'I' for 16-bit PNGs); 8-bit values stored wide stay as is
        top = 65535.0 if arr.size and arr.max() > 255 else 255.0
    return np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8)


def read_mask(path: str | Path) -> np.ndarray:
    """Binary lesion mask as a ``(H, W)`` bool array (any non-zero pixel is lesion)."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "file not found")
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert("L"))
    except Exception as exc:
        raise ImageReadError(path, f"{type(exc).__name__}: {exc}") from exc
    return arr > 0


def load_or_none(
    path: str | Path, on_error: Literal["raise", "skip"] = "raise", max_pixels: int = MAX_PIXELS
) -> Image.Image | None:
    """``read_rgb`` for training loops: ``on_error='skip'`` logs the bad file and returns None.

    The skip mode exists so a multi-day pretraining run does not die on one corrupt file
    out of millions; the file is logged (WARNING, with the reason) so it can be fixed,
    never silently ignored.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    try:
        return read_rgb(path, max_pixels=max_pixels)
    except ImageReadError as exc:
        if on_error == "raise":
            raise
        log.warning("skipping unreadable image %s", exc)
        return None


class SafeImageLoader:
    """Callable ``path -> image | None`` that remembers which files it skipped."""

    def __init__(self, on_error: Literal["raise", "skip"] = "skip", max_pixels: int = MAX_PIXELS):
        self.on_error = on_error
        self.max_pixels = max_pixels
        self.skipped: list[ImageReadError] = []

    def __call__(self, path: str | Path) -> Image.Image | None:
        try:
            return read_rgb(path, max_pixels=self.max_pixels)
        except ImageReadError as exc:
            if self.on_error == "raise":
                raise
            self.skipped.append(exc)
            log.warning("skipping unreadable image %s", exc)
            return None
