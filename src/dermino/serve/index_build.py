"""Build or extend a similar-case index from a manifest with a trained classifier's backbone.

The index must be embedded by the same network that embeds queries, so the classifier's
backbone hash is stored in the index and checked when the service starts or rows are added.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermino.classifier.model import Classifier
from dermino.data.images import read_rgb
from dermino.data.manifest import read_manifest, split_labels
from dermino.features import EmbedConfig, extract_embeddings, image_paths, model_hash
from dermino.progress import tqdm
from dermino.serve.index import META_COLUMNS, CaseIndex, thumbnail_jpeg
from dermino.sharding import Shard

log = logging.getLogger(__name__)


def embedder_id(classifier: Classifier) -> dict[str, Any]:
    return {
        "model": model_hash(classifier.backbone),
        "backbone": classifier.backbone_spec.get("name", ""),
        "pool": classifier.pool,
        "preprocessing": classifier.transform.params(),
    }


def check_compatible(index: CaseIndex, classifier: Classifier, where: str) -> None:
    # compared as JSON (tuples in memory are lists once saved)
    want, have = json.loads(json.dumps(embedder_id(classifier))), json.loads(json.dumps(index.embedder))
    for key in ("model", "pool", "preprocessing"):
        if have.get(key) != want.get(key):
            raise ValueError(f"{where}: the index was embedded with a different {key} than this classifier's "
                             f"backbone; rebuild it with 'dermino index build --classifier ...'")


def _clean(value: Any) -> Any:
    if value is None or (isinstance(value, float) and value != value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


def build_index(
    classifier: Classifier,
    manifest: str | Path,
    out: str | Path,
    splits: Sequence[str] = ("train", "val"),
    append: bool = False,
    backend: str = "auto",
    cache_dir: str = "",  # "": <folder of out>/cache/embeddings, beside the index (never inside it)
    batch_size: int = 64,
    progress: bool = True,
    chunk_size: int | None = None,  # rows per cached embedding chunk (None: EmbedConfig's)
    shard: Shard | None = None,
) -> CaseIndex | None:
    """Embed the manifest's labelled rows of ``splits`` (all rows when empty) and save the index.

    ``append=True`` loads the index at ``out`` and adds only images it does not hold yet.
    With a ``shard`` of several torchrun processes the embedding is split across the ranks
    (chunks of ``chunk_size`` rows); rank 0 writes the index, the same files as one process
    would, and returns it; the other ranks return None once their chunks are done.
    """
    shard = shard or Shard()
    out = Path(out)
    df = read_manifest(manifest)
    root = df.attrs.get("root")
    labelled = df[[bool(split_labels(v)) for v in df["labels"]]] if "labels" in df.columns else df.iloc[:0]
    labelled = labelled.reset_index(drop=True)
    labelled.attrs["root"] = root
    chosen = np.ones(len(labelled), dtype=bool)
    if splits and "split" in labelled.columns:
        chosen = np.array(labelled["split"].astype(str).isin(list(splits)), dtype=bool)
    if append and (out / "index.json").is_file():
        index = CaseIndex.load(out, backend=backend)
        check_compatible(index, classifier, str(out))
        have = index.contains()
        chosen &= np.array([str(p) not in have for p in image_paths(labelled)], dtype=bool)
    else:
        index = CaseIndex(dim=int(classifier.head.in_features), embedder=embedder_id(classifier), backend=backend)
    df = labelled[chosen].reset_index(drop=True)
    df.attrs["root"] = root
    if len(df) == 0:
        if len(index) == 0:
            raise ValueError(f"{manifest}: no labelled rows in splits {list(splits)} to index")
        log.info("index: nothing new to add (%d cases)", len(index))
        if not shard.is_main:
            return None
        index.save(out)
        return index
    t = classifier.transform
    cfg = EmbedConfig(image_size=t.image_size, resize=t.resize, interpolation=t.interpolation,
                      pool=classifier.pool, batch_size=batch_size, **({"chunk_size": chunk_size} if chunk_size else {}),
                      cache_dir=cache_dir or str(Path(out).parent / "cache" / "embeddings"),
                      device=str(classifier.feat_mean.device))
    if len(index) == 0:
        # embed every labelled row, then keep the chosen ones: after 'classifier train' on the same
        # manifest these rows are exactly the cached ones, so nothing is computed again
        feats = extract_embeddings(classifier.backbone, labelled, cfg, progress=progress,
                                   shard=shard).features[chosen]
    else:
        feats = extract_embeddings(classifier.backbone, df, cfg, progress=progress, shard=shard).features
    if not shard.is_main:  # rank 0 makes the thumbnails and writes the index
        return None
    paths = image_paths(df)
    records, thumbs = [], []
    for i, path in enumerate(tqdm(paths, desc="thumbnails", unit="img", disable=not progress)):
        row = df.iloc[i]
        labels = split_labels(row["labels"])
        records.append({
            "image": str(path), "label": labels[0], "labels": labels,
            **{c: _clean(row[c]) for c in META_COLUMNS if c in df.columns and not pd.isna(row[c])},
        })
        thumbs.append(thumbnail_jpeg(read_rgb(path)))
    index.add(feats, records, thumbs)
    index.save(out)
    log.info("index: %d cases (%d added) -> %s", len(index), len(records), out)
    return index
