"""Upload limits and decoding: clear 4xx errors, nothing written to disk unless configured.

Checks, cheapest first: the request body size (``BodyLimit``, before any parsing), the
declared content type, the byte count of the file part, then decoding in memory with the
same rules as every other image read in dermino (``data.images.decode_rgb``: truncated
files and decompression bombs are refused, the pixel count is checked from the header
before decoding), and the aspect ratio is checked. Decoding runs in a worker thread, not on
the event loop. What the models see is then bounded by ``max_side``: larger images are
shrunk (aspect kept) right after decoding, so the per-request cost of the transform, the
attention overlay and the segmentation mask depends on ``max_side``, not on the upload
(docs/serve.md, "Cost per request"). Saving uploads is opt-in and only ever inside ``save_dir``, under a name
derived from the content hash (the client's file name is never used as a path).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import UploadFile
from PIL import Image
from starlette.concurrency import run_in_threadpool

from dermino.config import AtLeast1, Range, check_config
from dermino.data.images import ImageReadError, decode_rgb
from dermino.files import write_bytes_atomic, write_text_atomic
from dermino.serve.body import MAX_UPLOAD_BYTES, BodyLimit

__all__ = ["BodyLimit", "UploadError", "UploadLimits", "read_image", "save_upload", "shrink"]

ALLOWED_TYPES = ("image/jpeg", "image/png", "image/bmp", "image/tiff", "image/webp")
ALLOWED_FORMATS = {"JPEG", "PNG", "BMP", "TIFF", "WEBP", "MPO"}


@dataclass
class UploadLimits:
    max_bytes: Annotated[int, AtLeast1] = MAX_UPLOAD_BYTES
    max_pixels: Annotated[int, AtLeast1] = 40_000_000
    #: longer side of the image the models work on; larger uploads are shrunk to it
    max_side: Annotated[int, AtLeast1] = 2048
    #: longer side / shorter side above this is refused (422): the model would see a sliver
    max_aspect: Annotated[float, Range(ge=1)] = 20.0
    content_types: tuple[str, ...] = ALLOWED_TYPES
    save_dir: str | None = None  # None: uploads stay in memory only

    def __post_init__(self) -> None:
        check_config(self, "upload limits")  # the declared checks above, at construction


class UploadError(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


async def read_image(file: UploadFile, limits: UploadLimits) -> Image.Image:
    """The uploaded file as RGB, or ``UploadError`` with the HTTP status and a reason."""
    name = Path(file.filename or "upload").name
    ctype = (file.content_type or "").split(";")[0].strip().lower()
    if ctype not in limits.content_types:
        raise UploadError(415, f"{name}: content type {ctype or 'missing'!r} is not accepted; "
                               f"send one of {', '.join(limits.content_types)}")
    data = await file.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:
        raise UploadError(413, f"{name}: file is larger than the limit of {limits.max_bytes:,} bytes")
    fmt = _sniff_format(data)
    if fmt is not None and fmt not in ALLOWED_FORMATS:
        raise UploadError(415, f"{name}: image format {fmt} is not accepted")
    try:
        image = await run_in_threadpool(decode_rgb, data, name, limits.max_pixels)
    except ImageReadError as exc:
        status = 413 if "decompression bomb" in exc.reason else 422
        raise UploadError(status, f"{name}: {exc.reason}") from exc
    w, h = image.size
    if max(w, h) > limits.max_aspect * min(w, h):
        raise UploadError(422, f"{name}: {w}x{h} pixels: aspect ratio {max(w, h) / min(w, h):,.1f}:1 is over "
                               f"the limit of {limits.max_aspect:g}:1 (the model sees a centre square: "
                               "crop the image around the lesion)")
    if max(w, h) > limits.max_side:
        image = await run_in_threadpool(shrink, image, limits.max_side)
    if limits.save_dir:
        save_upload(data, name, limits.save_dir)
    return image


def shrink(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` with its longer side at most ``max_side`` (aspect kept, each side at least 1 pixel)."""
    image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return image


def _sniff_format(data: bytes) -> str | None:
    """The container format from the header only (no pixels decoded); None when unknown."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            return probe.format
    except Exception:
        return None  # decode_rgb reports the precise reason


def save_upload(data: bytes, name: str, save_dir: str | Path) -> Path:
    """Write to ``save_dir/<sha256[:16]><ext>`` (+ a JSON sidecar with the client's name)."""
    folder = Path(save_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()[:16]
    ext = Path(name).suffix.lower()
    ext = ext if ext in (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp") else ".bin"
    path = (folder / f"{digest}{ext}").resolve()
    if path.parent != folder:  # cannot happen with the names above; checked anyway
        raise UploadError(400, "refusing to write outside the upload folder")
    # atomic, through a temporary name of this process: several server workers may save the same upload at once
    write_bytes_atomic(path, data)
    write_text_atomic(path.with_suffix(path.suffix + ".json"), json.dumps({"client_name": name, "bytes": len(data)}))
    return path
