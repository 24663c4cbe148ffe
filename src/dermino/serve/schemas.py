"""Response models: they make the OpenAPI schema precise (clients and the property test read it)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Diagnosis(BaseModel):
    label: str
    probability: float = Field(ge=0, le=1, description="temperature-calibrated softmax probability")


class ClassifyResponse(BaseModel):
    predictions: list[Diagnosis]
    temperature: float
    n_classes: int


class SimilarCase(BaseModel):
    rank: int
    label: str
    similarity: float = Field(description="cosine similarity of the embeddings, in [-1, 1]")
    thumbnail: str = Field(description="data:image/jpeg;base64,...")
    image_name: str = Field(description="file name of the reference image (no server path)")
    metadata: dict[str, str | float | int | None]


class SimilarResponse(BaseModel):
    cases: list[SimilarCase]
    index_size: int


class ExplainResponse(BaseModel):
    method: str
    head: int | None
    heads: int
    grid: list[int]
    overlay: str = Field(description="data:image/png;base64,... at the uploaded image's size")


class SegmentResponse(BaseModel):
    mask: str = Field(description="data:image/png;base64,... 0/255 mask at the uploaded image's size")
    overlay: str
    lesion_fraction: float = Field(ge=0, le=1)


class EmbedResponse(BaseModel):
    dim: int
    embedding: list[float]


class WorkerStatus(BaseModel):
    pid: int = Field(description="operating-system process id of the worker that answered")
    index: int = Field(ge=0, description="the worker's number, 0 to workers - 1 (a restarted worker takes a free one)")
    workers: int = Field(ge=1, description="worker processes this server was started with (--workers)")


class HealthResponse(BaseModel):
    status: str
    index_size: int
    segmenter: bool
    batching: dict[str, float] = Field(description="this worker's micro-batcher: each worker has its own")
    worker: WorkerStatus


class VersionResponse(BaseModel):
    dermino: str
    code: str
    classifier: dict
    index: dict | None
