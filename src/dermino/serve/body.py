"""Request-body limit shared by every server (``dermino serve`` and ``dermino study serve``).

Kept apart from ``uploads`` so the study server (which loads no model and no torch) can use it:
a body over the limit is refused with 413 before it is parsed or buffered, whether the client
declares its length or streams it in chunks.
"""

from __future__ import annotations

import json
import math

from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

#: largest accepted upload file (``dermino serve --max-upload-mb``'s default)
MAX_UPLOAD_BYTES = 15 * 1024 * 1024
#: multipart overhead allowed on top of the file-size limit
FORM_OVERHEAD = 64 * 1024
#: the default request-body limit of every dermino server
MAX_BODY = MAX_UPLOAD_BYTES + FORM_OVERHEAD


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
        started = exceeded = False

        async def limited_receive():
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    exceeded = True
                    raise _TooLarge
            return message

        async def guarded_send(message):
            nonlocal started
            if exceeded:  # the app caught _TooLarge as a parse error (FastAPI: 400): answer 413 instead
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _reject(send, self.max_body)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
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


def _finite(value):
    """``value`` with NaN and infinities (not valid JSON) replaced by their names."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


async def validation_error(request, exc) -> JSONResponse:
    """422 for a request that fails validation, also when the bad input was NaN or Infinity.

    FastAPI's own handler echoes the input back, and ``NaN`` cannot be written as JSON: a
    ``seconds: NaN`` answer became a 500. The echoed values are made printable instead.
    """
    return JSONResponse(status_code=422, content={"detail": _finite(jsonable_encoder(exc.errors()))})


def install_validation_handler(app) -> None:
    from fastapi.exceptions import RequestValidationError

    app.add_exception_handler(RequestValidationError, validation_error)
