"""Similar-case index: reference images, their labels, thumbnails and embeddings.

Clinicians trust a suggestion more when they can see confirmed cases that look alike.
Embeddings are L2-normalised, so similarity is cosine. Search is exact: a torch matrix
product by default, ``faiss.IndexFlatIP`` when faiss-cpu is installed (same results, faster
on large indexes). A saved index is one folder (``index.json`` + ``embeddings.safetensors`` +
``records.json`` + ``thumbs/``), written atomically; ``add`` appends cases, so an index grows
without re-embedding the old ones.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from dermino.files import atomic_dir, load_safetensors

log = logging.getLogger(__name__)

FORMAT = "dermino-case-index"
THUMB_SIDE = 160
META_COLUMNS = ("source", "split", "lesion_id", "sex", "age", "site", "fitzpatrick", "modality")


def has_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def thumbnail_jpeg(image: Image.Image, side: int = THUMB_SIDE) -> bytes:
    im = image.copy()
    im.thumbnail((side, side), Image.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


@dataclass
class CaseIndex:
    """Embeddings (N, D), one record per case (image, label, metadata) and JPEG thumbnails."""

    dim: int
    embedder: dict[str, Any] = field(default_factory=dict)  # which model made the embeddings
    backend: str = "auto"  # auto | torch | faiss
    embeddings: torch.Tensor = field(init=False)
    records: list[dict[str, Any]] = field(default_factory=list)
    thumbs: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.backend not in ("auto", "torch", "faiss"):
            raise ValueError(f"index backend must be auto, torch or faiss, got {self.backend!r}")
        if self.backend == "faiss" and not has_faiss():
            raise ValueError("index backend 'faiss' requested but faiss-cpu is not installed")
        self.embeddings = torch.zeros(0, self.dim)
        self._faiss = None

    def __len__(self) -> int:
        return len(self.records)

    @property
    def uses_faiss(self) -> bool:
        return self.backend == "faiss" or (self.backend == "auto" and has_faiss())

    def add(self, features: np.ndarray, records: list[dict[str, Any]], thumbs: list[bytes]) -> None:
        f = torch.as_tensor(np.asarray(features), dtype=torch.float32)
        if f.ndim != 2 or f.shape[1] != self.dim:
            raise ValueError(f"index expects (N, {self.dim}) features, got {tuple(f.shape)}")
        if not len(f) == len(records) == len(thumbs):
            raise ValueError(f"add: {len(f)} features, {len(records)} records, {len(thumbs)} thumbnails")
        self.embeddings = torch.cat([self.embeddings, torch.nn.functional.normalize(f, dim=1)])
        self.records.extend(dict(r) for r in records)
        self.thumbs.extend(thumbs)
        self._faiss = None  # rebuilt lazily

    def contains(self) -> set[str]:
        return {str(r.get("image")) for r in self.records}

    def search(self, queries: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """(similarities (B, k'), indices (B, k')) best first; k' = min(k, len(index))."""
        if len(self) == 0:
            raise ValueError("the case index is empty")
        q = torch.nn.functional.normalize(torch.as_tensor(np.asarray(queries), dtype=torch.float32), dim=1)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"query has shape {tuple(q.shape)}, index dimension is {self.dim}")
        k = max(1, min(int(k), len(self)))
        if self.uses_faiss:
            import faiss

            if self._faiss is None:
                self._faiss = faiss.IndexFlatIP(self.dim)
                self._faiss.add(self.embeddings.numpy())
            sims, idx = self._faiss.search(np.ascontiguousarray(q.numpy()), k)
            return sims, idx
        sims, idx = (q @ self.embeddings.T).topk(k, dim=1)
        return sims.numpy(), idx.numpy()

    def thumbnail_data_url(self, i: int) -> str:
        return "data:image/jpeg;base64," + base64.b64encode(self.thumbs[i]).decode()

    # ------------------------------------------------------------------ files
    def save(self, folder: str | Path) -> Path:
        """One folder, replaced atomically (a crash leaves the previous index intact)."""
        out = Path(folder)
        with atomic_dir(out) as tmp:
            (tmp / "thumbs").mkdir(parents=True)
            names = []
            for i, jpeg in enumerate(self.thumbs):
                name = f"{i:07d}.jpg"
                (tmp / "thumbs" / name).write_bytes(jpeg)
                names.append(name)
            save_file({"embeddings": self.embeddings.contiguous()}, str(tmp / "embeddings.safetensors"))
            records = [{**r, "thumb": n} for r, n in zip(self.records, names, strict=True)]
            (tmp / "records.json").write_text(json.dumps(records, indent=1, default=str))
            meta = {"format": FORMAT, "version": 1, "dim": self.dim, "n": len(self), "embedder": self.embedder}
            (tmp / "index.json").write_text(json.dumps(meta, indent=2))
        return out

    @classmethod
    def load(cls, folder: str | Path, backend: str = "auto") -> CaseIndex:
        folder = Path(folder)
        meta_path = folder / "index.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} not found (is {folder} a 'dermino index build' output?)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
        emb = load_safetensors(folder / "embeddings.safetensors", "index embeddings")["embeddings"]
        records = json.loads((folder / "records.json").read_text())
        if len(records) != len(emb) or emb.shape[1:] != (meta["dim"],):
            raise ValueError(f"{folder}: {len(records)} records but embeddings of shape {tuple(emb.shape)}")
        thumbs = []
        for r in records:
            name = Path(str(r.pop("thumb", ""))).name  # a record never points outside thumbs/
            path = folder / "thumbs" / name
            if not name or not path.is_file():
                raise FileNotFoundError(f"{folder}: thumbnail {path} missing")
            thumbs.append(path.read_bytes())
        index = cls(dim=int(meta["dim"]), embedder=meta.get("embedder", {}), backend=backend)
        index.embeddings = emb.float()
        index.records, index.thumbs = records, thumbs
        return index
