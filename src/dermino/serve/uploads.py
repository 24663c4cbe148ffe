"""Upload limits and decoding: clear 4xx errors, nothing written to disk unless configured.

Checks, cheapest first: the request body size (``BodyLimit``, before any parsing), the
declared content type, the byte count of the file part, then decoding in memory with the
same rules as every other image read in dermino (``data.images.decode_rgb``: truncated
files and decompression bombs are refused, the pixel count is checked from the header
before decoding). Saving uploads is opt-in and only ever inside ``save_dir``, under a name
derived from the content hash (the client's file name is never used as a path).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

from fastapi import UploadFile
from PIL import Image

from dermino.data.images import ImageReadError, decode_rgb

ALLOWED_TYPES = ("image/jpeg", "image/png", "image/bmp", "image/tiff", "image/webp")
ALLOWED_FORMATS = {"JPEG", "PNG", "BMP", "TIFF", "WEBP", "MPO"}


@dataclass
class UploadLimits:
    max_bytes: int = 15 * 1024 * 1024
    max_pixels: int = 40_000_000
    content_types: tuple[str, ...] = ALLOWED_TYPES
    save_dir: str | None = None  # None: uploads stay in memory only

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_pixels <= 0:
            raise ValueError("upload limits must be positive")


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
        image = decode_rgb(data, name, max_pixels=limits.max_pixels)
    except ImageReadError as exc:
        status = 413 if "decompression bomb" in exc.reason else 422
        raise UploadError(status, f"{name}: {exc.reason}") from exc
    if limits.save_dir:
        save_upload(data, name, limits.save_dir)
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
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    path.with_suffix(path.suffix + ".json").write_text(json.dumps({"client_name": name, "bytes": len(data)}))
    return path


class BodyLimit:
    """ASGI middleware: 413 for request bodies over ``max_body`` bytes, before parsing them."""

    def __init__(self, app, max_body: int):
        self.app, self.max_body = app, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await _reject(send, self.max_body)
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _TooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _reject(send, self.max_body)


class _TooLarge(Exception):
    pass


async def _reject(send, limit: int) -> None:
    body = json.dumps({"detail": f"request body is larger than the limit of {limit:,} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
