"""The API: /classify, /similar, /explain, /segment, /embed, /health, /version.

Every POST takes one multipart ``file`` field. Bad uploads get 413 (too large, decompression
bomb), 415 (not an accepted content type or format) or 422 (not decodable, truncated),
each with a ``detail`` naming the file and the reason.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, File, HTTPException, Query, Request, UploadFile
from PIL import Image

import dermino
from dermino.results import code_version
from dermino.serve import schemas as S
from dermino.serve.explain import png_bytes
from dermino.serve.service import Service
from dermino.serve.uploads import UploadError, read_image

router = APIRouter()
UploadField = Annotated[UploadFile, File(description="a dermoscopic or clinical image (JPEG, PNG, BMP, TIFF, WebP)")]
BAD_UPLOAD = {
    400: {"description": "malformed multipart body"},
    413: {"description": "file or request too large, or a decompression bomb"},
    415: {"description": "content type or image format not accepted"},
    422: {"description": "not a decodable image (e.g. truncated), or a bad parameter"},
}


def service(request: Request) -> Service:
    return request.app.state.service


async def _image(request: Request, file: UploadFile) -> Image.Image:
    try:
        return await read_image(file, service(request).limits)
    except UploadError as exc:
        raise HTTPException(exc.status, exc.detail) from exc


def _data_url(image: Image.Image, mime: str = "png") -> str:
    if mime == "png":
        return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


@router.get("/health", response_model=S.HealthResponse, tags=["service"])
def health(request: Request) -> S.HealthResponse:
    svc = service(request)
    worker = request.app.state.worker
    return S.HealthResponse(status="ok", index_size=len(svc.index) if svc.index is not None else 0,
                            segmenter=svc.segmenter is not None, batching=svc.batcher.stats(),
                            worker=S.WorkerStatus(pid=os.getpid(), index=worker.index, workers=worker.workers))


@router.get("/version", response_model=S.VersionResponse, tags=["service"])
def version(request: Request) -> S.VersionResponse:
    svc = service(request)
    c = svc.classifier
    info = {
        "backbone": c.backbone_spec.get("name", ""), "labels": c.label_names,
        "temperature": float(c.temperature), "image_size": c.transform.image_size,
        "calibration": c.info.get("calibration", {}), "metrics": c.info.get("metrics", {}),
        "training_data": {k: v for k, v in c.info.get("training_data", {}).items() if k != "manifest"},
    }
    index = None if svc.index is None else {"size": len(svc.index), "faiss": svc.index.uses_faiss,
                                            "backbone": svc.index.embedder.get("backbone", "")}
    return S.VersionResponse(dermino=dermino.__version__, code=code_version(), classifier=info, index=index)


@router.post("/classify", response_model=S.ClassifyResponse, responses=BAD_UPLOAD, tags=["model"])
async def classify(request: Request, file: UploadField,
                   top_k: Annotated[int, Query(ge=1, le=100)] = 5) -> S.ClassifyResponse:
    """Top-k diagnoses with temperature-calibrated probabilities."""
    svc = service(request)
    result = await svc.analyze(await _image(request, file))
    order = np.argsort(-result.probs)[: min(top_k, len(result.probs))]
    names = svc.classifier.label_names
    return S.ClassifyResponse(
        predictions=[S.Diagnosis(label=names[i], probability=float(result.probs[i])) for i in order],
        temperature=float(svc.classifier.temperature), n_classes=len(names))


@router.post("/similar", response_model=S.SimilarResponse,
             responses={**BAD_UPLOAD, 404: {"description": "no case index configured on this server"}}, tags=["model"])
async def similar(request: Request, file: UploadField,
                  k: Annotated[int, Query(ge=1, le=50)] = 6) -> S.SimilarResponse:
    """The k most similar reference cases (cosine similarity of embeddings)."""
    svc = service(request)
    if svc.index is None:
        raise HTTPException(404, "no case index configured (start the server with --index DIR)")
    result = await svc.analyze(await _image(request, file))
    sims, idx = svc.index.search(result.embedding[None], k)
    cases = []
    for rank, (s, i) in enumerate(zip(sims[0], idx[0], strict=True), start=1):
        rec = svc.index.records[int(i)]
        meta = {key: v for key, v in rec.items()
                if key not in ("image", "label", "labels") and (v is None or isinstance(v, str | int | float))}
        cases.append(S.SimilarCase(rank=rank, label=str(rec.get("label", "")), similarity=float(s),
                                   thumbnail=svc.index.thumbnail_data_url(int(i)),
                                   image_name=Path(str(rec.get("image", ""))).name, metadata=meta))
    return S.SimilarResponse(cases=cases, index_size=len(svc.index))


@router.post("/explain", response_model=S.ExplainResponse, responses=BAD_UPLOAD, tags=["model"])
async def explain(request: Request, file: UploadField,
                  method: Literal["rollout", "cls"] = "rollout",
                  head: Annotated[int | None, Query(ge=0, description="cls only: one head (default: mean)")] = None,
                  ) -> S.ExplainResponse:
    """Attention overlay: rollout over all blocks, or last-block CLS attention (one head or their mean)."""
    svc = service(request)
    image = await _image(request, file)
    if head is not None and head >= svc.n_heads():
        raise HTTPException(422, f"head must be in [0, {svc.n_heads()}), got {head}")
    from starlette.concurrency import run_in_threadpool

    ov, grid, heads = await run_in_threadpool(svc.explain, image, method, head if method == "cls" else None)
    return S.ExplainResponse(method=method, head=head if method == "cls" else None, heads=heads,
                             grid=list(grid), overlay=_data_url(ov))


@router.post("/segment", response_model=S.SegmentResponse,
             responses={**BAD_UPLOAD, 404: {"description": "no segmenter configured on this server"}}, tags=["model"])
async def segment(request: Request, file: UploadField) -> S.SegmentResponse:
    """Lesion mask and overlay (needs --segmenter)."""
    svc = service(request)
    if svc.segmenter is None:
        raise HTTPException(404, "no segmenter configured (start the server with --segmenter DIR)")
    image = await _image(request, file)
    from starlette.concurrency import run_in_threadpool

    from dermino.segment.predict import overlay

    mask = await run_in_threadpool(svc.segment, image)
    mask_img = Image.fromarray(mask.astype(np.uint8) * 255)
    return S.SegmentResponse(mask=_data_url(mask_img), overlay=_data_url(overlay(image, mask)),
                             lesion_fraction=float(mask.mean()))


@router.post("/embed", response_model=S.EmbedResponse, responses=BAD_UPLOAD, tags=["model"])
async def embed(request: Request, file: UploadField) -> S.EmbedResponse:
    """The backbone embedding the classifier and the index use."""
    result = await service(request).analyze(await _image(request, file))
    return S.EmbedResponse(dim=len(result.embedding), embedding=[float(v) for v in result.embedding])
