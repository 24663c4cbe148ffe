"""``dermino study create``: sample cases, copy them into the study, precompute the AI's help.

Why precompute: every reader must see exactly the same AI output for a case, and the study
server then needs no model (it starts in a second and cannot drift if a model file changes).
The study folder holds everything: ``study.json``, the database (SQLite by default), the
case images (re-encoded copies: no EXIF, no original file names) and the attention overlays.
Tokens are printed once and written to ``links.csv`` (mode 600); the database keeps digests.

The label space (the diagnoses a reader can choose) is fixed here, the same for every reader:
the classifier's classes, or a list given by the organiser. It is never derived from the
sampled cases (that would tell readers which diagnoses the cases hold), only cases whose truth
is in it are sampled, and the AI's help names only labels in it (top-3 and similar cases).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermino.data.images import read_rgb
from dermino.data.manifest import read_manifest, resolve, split_labels
from dermino.files import write_bytes_atomic, write_text_atomic
from dermino.study.db import DB_NAME, STUDY_FILE, default_url, open_db, token_hash
from dermino.study.models import Case, CaseOrder, Reader, Study
from dermino.study.sampling import stratified_sample

log = logging.getLogger(__name__)
TOP_K = 3
N_SIMILAR = 6


@dataclass
class Created:
    folder: Path
    admin_token: str
    reader_tokens: dict[str, str]  # reader name -> token
    n_cases: int


def read_readers(path: str | Path) -> list[dict[str, str]]:
    """``name`` (required, unique) and ``experience`` (optional group, e.g. 'junior') per row."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"readers file not found: {path}")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "name" not in rows[0]:
        raise ValueError(f"{path}: needs a header with a 'name' column (and optionally 'experience')")
    names = [r["name"].strip() for r in rows]
    if any(not n for n in names):
        raise ValueError(f"{path}: a reader has an empty name (row {names.index('') + 2})")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{path}: duplicate reader names {dup}")
    return [{"name": n, "experience": (r.get("experience") or "").strip()} for n, r in zip(names, rows, strict=True)]


def _ai_outputs(classifier: Any, index: Any, images: list[Any], case_rows: list[dict[str, Any]],
                label_space: list[str]) -> list[tuple[dict[str, Any], bytes]]:
    """Per case: {top3, similar} and the attention overlay PNG; only labels of ``label_space`` are named."""
    from dermino.serve.explain import explain_image, png_bytes

    out = []
    parts = [classifier.predict(images[i:i + 16]) for i in range(0, len(images), 16)]  # bounded memory
    probs, feats = np.concatenate([p for p, _ in parts]), np.concatenate([f for _, f in parts])
    choosable = set(label_space)
    allowed = np.array([name in choosable for name in classifier.label_names])
    for k, (image, row) in enumerate(zip(images, case_rows, strict=True)):
        order = [i for i in np.argsort(-probs[k]) if allowed[i]][:TOP_K]
        ai: dict[str, Any] = {"top": [{"label": classifier.label_names[i], "probability": float(probs[k][i])}
                                      for i in order], "similar": []}
        if index is not None and len(index):
            sims, idx = index.search(feats[k][None], min(len(index), N_SIMILAR + 8))
            for s, i in zip(sims[0], idx[0], strict=True):
                rec = index.records[int(i)]
                # never show the case itself (or another image of the same lesion) with its label
                if str(rec.get("image")) == row["path"] or (
                        row["lesion_id"] and str(rec.get("lesion_id", "")) == row["lesion_id"]):
                    continue
                if str(rec.get("label", "")) not in choosable:  # a label the reader could not choose
                    continue
                ai["similar"].append({"label": str(rec.get("label", "")), "similarity": float(s),
                                      "thumbnail": index.thumbnail_data_url(int(i)), "metadata": {}})
                if len(ai["similar"]) == N_SIMILAR:
                    break
        overlay, _, _ = explain_image(classifier.backbone, classifier.transform, image, "rollout")
        out.append((ai, png_bytes(overlay)))
        if (k + 1) % 20 == 0:
            log.info("study: AI help for %d/%d cases", k + 1, len(images))
    return out


def _label_space(given: list[str] | None, classes: list[str]) -> list[str]:
    """The given labels (stripped, de-duplicated, in order) or the classifier's classes."""
    space = list(dict.fromkeys(s.strip() for s in (given or classes) if s and s.strip()))
    if not space:
        raise ValueError("the study's label space is empty (give --labels or a classifier with classes)")
    if not set(space) & set(classes):
        raise ValueError(f"no label of {space} is a class of the classifier ({classes}): the AI could name none")
    return space


def create_study(manifest: str | Path, n_cases: int, readers: str | Path, classifier: str | Path | Any,
                 index: str | Path | Any | None, out: str | Path, seed: int = 0, name: str = "",
                 db_url: str | None = None, split: str | None = None, labels: list[str] | None = None) -> Created:
    """Build the study folder and database; returns the tokens (shown once).

    ``labels``: the label space readers choose from (default: the classifier's classes).
    """
    from dermino.classifier.model import load_classifier
    from dermino.serve.index import CaseIndex

    out = Path(out)
    if (out / STUDY_FILE).exists():
        raise ValueError(f"{out} already holds a study ({STUDY_FILE}); choose another --out")
    if not db_url and (out / DB_NAME).exists():
        raise ValueError(f"{out / DB_NAME} is left from an interrupted 'study create'; delete {out} and rerun")
    reader_rows = read_readers(readers)
    df = read_manifest(manifest)
    if split:
        df = df[df["split"] == split]
    row_labels = [split_labels(v) for v in df["labels"]]
    keep = [i for i, lab in enumerate(row_labels) if lab]
    if not keep:
        raise ValueError(f"{manifest}: no labelled images{f' in split {split!r}' if split else ''}")
    df = df.iloc[keep].reset_index(drop=True)
    clf = load_classifier(classifier) if isinstance(classifier, str | Path) else classifier
    label_space = _label_space(labels, list(clf.label_names))
    truth_all = [split_labels(v)[0] for v in df["labels"]]
    inside = [i for i, t in enumerate(truth_all) if t in label_space]
    outside = sorted({t for t in truth_all if t not in label_space})
    if outside:
        log.warning("study: %d images whose diagnosis is outside the label space are not sampled: %s",
                    len(truth_all) - len(inside), ", ".join(outside[:10]))
    if not inside:
        raise ValueError(f"{manifest}: no labelled image has a diagnosis in the label space {label_space}")
    df = df.iloc[inside].reset_index(drop=True)
    truth = [truth_all[i] for i in inside]
    picked = stratified_sample(truth, n_cases, seed)
    idx = CaseIndex.load(index) if isinstance(index, str | Path) else index

    out.mkdir(parents=True, exist_ok=True)
    (out / "cases").mkdir(exist_ok=True)
    meta = {"name": name or out.name, "manifest": str(manifest), "seed": seed, "cases": n_cases}
    if db_url:
        meta["db_url"] = db_url
    url = db_url or default_url(out)
    session_factory = open_db(url)
    rng = np.random.default_rng(seed + 1)
    admin = secrets.token_urlsafe(24)
    tokens = {r["name"]: secrets.token_urlsafe(24) for r in reader_rows}
    rows = [{"path": str(resolve(df, df.at[i, "image"])), "lesion_id": str(df.at[i, "lesion_id"] or ""),
             "truth": truth[i]} for i in picked]
    images = [read_rgb(r["path"]) for r in rows]
    log.info("study: computing the AI's suggestions for %d cases", len(rows))
    ai = _ai_outputs(clf, idx, images, rows, label_space)
    with session_factory.begin() as s:
        s.add(Study(name=meta["name"], labels=label_space, admin_token_hash=token_hash(admin),
                    seed=seed, config=meta))
        cases = []
        for k, (row, image, (help_, overlay)) in enumerate(zip(rows, images, ai, strict=True), start=1):
            buf = io.BytesIO()
            image.save(buf, format="JPEG", quality=92)
            write_bytes_atomic(out / "cases" / f"{k}.jpg", buf.getvalue())
            write_bytes_atomic(out / "cases" / f"{k}_overlay.png", overlay)
            case = Case(id=k, image=f"cases/{k}.jpg", overlay=f"cases/{k}_overlay.png", source_image=row["path"],
                        truth=row["truth"], ai=help_)
            s.add(case)
            cases.append(case)
        s.flush()
        for r in reader_rows:
            reader = Reader(name=r["name"], experience=r["experience"], token_hash=token_hash(tokens[r["name"]]))
            s.add(reader)
            s.flush()
            for rnd in (1, 2):  # round 2: the same cases in a new random order
                for pos, j in enumerate(rng.permutation(len(cases))):
                    s.add(CaseOrder(reader_id=reader.id, round=rnd, position=pos, case_id=cases[int(j)].id))
    write_text_atomic(out / STUDY_FILE, json.dumps(meta, indent=2))
    links = out / "links.csv"
    pd.DataFrame([{"role": "admin", "name": "", "token": admin, "path": f"/study/admin.html#token={admin}"}]
                 + [{"role": "reader", "name": n, "token": t, "path": f"/study/reader.html#token={t}"}
                    for n, t in tokens.items()]).to_csv(links, index=False)
    os.chmod(links, 0o600)
    return Created(out, admin, tokens, len(cases))
