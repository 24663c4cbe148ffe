"""Robust image decoding used everywhere images are read.

Each failure mode (truncated, zero-byte, not an image, decompression bomb …) raises
``ImageReadError`` naming the file, so a bad file is never silently skipped or turned
into a black square. Extended by the Foundation work; the public API is ``read_rgb``.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps


class ImageReadError(OSError):
    """An image file could not be decoded; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def read_rgb(path: str | Path) -> Image.Image:
    """Decode ``path`` to an 8-bit RGB PIL image with EXIF orientation applied."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "file not found")
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            return im.convert("RGB")
    except ImageReadError:
        raise
    except Exception as exc:  # PIL raises many types; name the file whatever it was
        raise ImageReadError(path, f"{type(exc).__name__}: {exc}") from exc
