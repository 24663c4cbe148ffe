"""The disease vocabulary: every observed disease name mapped to one of C merged classes.

Different sources name one disease differently; the knowledge loss needs one class per
disease (paper section 4.1.4). Two steps, in this order:

1. ``normalise_disease_name`` (deterministic): case, punctuation, British spellings,
   abbreviations ("bcc" -> "basal cell carcinoma"), exact synonyms. It must come first:
   the text encoder sees "bcc" and "basal cell carcinoma" as unrelated (cosine 0.11).
2. Similarity merging (this module): names whose text embeddings are nearly identical
   (plurals, typos: "xanthomas"/"xanthoma" 0.96, "centrifigum"/"centrifugum" 0.97) become one
   class. Merging is *complete-linkage* agglomerative clustering: a group is only formed if
   EVERY pair in it is at least ``threshold`` similar. Single linkage (union-find over pairs)
   chains: A~B and B~C would merge A with C even when A and C are different diseases.

The representative (canonical) name of a group is its most frequent name (the spelling the
data already uses most, so most labels stay unchanged), ties broken by the shortest (the
general term rather than a qualified one), then alphabetically (deterministic).

The result is saved as a CSV a clinician can review and edit (change a ``canonical`` cell to
merge or split classes); ``Vocabulary.load`` validates the edited file and training honours it.
"""

from __future__ import annotations

import difflib
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dermino.data.disease_names import normalise_disease_name
from dermino.files import atomic_path
from dermino.knowledge.encoder import TextEncoder

#: Default merge threshold for the packaged MiniLM encoder, chosen on real pairs
#: (tests/knowledge/test_knowledge_vocabulary.py): spelling variants the normaliser leaves behind score
#: >= 0.96 (xanthomas/xanthoma 0.963, keloids/keloid 0.962, dermatofibromas 0.971, centrifigum/
#: centrifugum 0.973); the most similar *different* labels of the real vocabularies score
#: <= 0.90 (porokeratosis actinic / disseminated actinic porokeratosis 0.899, basal cell
#: carcinoma / bcc morpheiform 0.894, actinic keratosis / akiec 0.847, melanoma / melanocytic
#: nevus 0.70). 0.93 sits in the middle of that gap. Other encoders need their own threshold.
DEFAULT_THRESHOLD = 0.93

#: Columns of the saved vocabulary file; only ``name`` and ``canonical`` are required on load.
FILE_COLUMNS = ["name", "canonical", "similarity", "count", "sources", "variants"]
_LIST_SEP = ";"


class UnknownLabelError(KeyError):
    """A disease name that is not in the vocabulary (prints its message, not a repr)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown label"


@dataclass(frozen=True)
class Entry:
    """One observed (normalised) name and where it goes."""

    name: str
    canonical: str
    similarity: float = 1.0  # cosine(name, canonical) at build time; NaN if unknown (hand-added)
    count: int = 0  # images labelled with this name
    sources: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()  # raw spellings that normalised to ``name``


@dataclass
class Vocabulary:
    """C disease classes and the mapping of every observed name onto them."""

    entries: list[Entry]
    threshold: float | None = None
    encoder: str | None = None
    _lookup: dict[str, str] = field(init=False, repr=False)
    _position: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.entries = sorted(self.entries, key=lambda e: (e.canonical, e.name != e.canonical, e.name))
        lookup: dict[str, str] = {}
        for e in self.entries:
            lookup[e.name] = e.canonical
            lookup.setdefault(e.canonical, e.canonical)
        self._lookup = lookup
        self._position = {c: i for i, c in enumerate(self.canonical)}

    # ------------------------------------------------------------------ views
    @property
    def canonical(self) -> list[str]:
        """The C class names, sorted: row j of W and column j of the targets."""
        return sorted({e.canonical for e in self.entries})

    @property
    def mapping(self) -> dict[str, str]:
        """Every observed normalised name (and every canonical name) -> its canonical name."""
        return dict(self._lookup)

    @property
    def similarity(self) -> dict[str, float]:
        """Observed name -> cosine similarity to its canonical name (1.0 for the canonical)."""
        return {e.name: e.similarity for e in self.entries}

    def merges(self) -> list[Entry]:
        """Entries whose name differs from their canonical name (what a reviewer checks)."""
        return [e for e in self.entries if e.name != e.canonical]

    def __len__(self) -> int:
        return len(self._position)

    def __contains__(self, name: object) -> bool:
        return normalise_disease_name(name) in self._lookup

    def canonical_of(self, name: str) -> str:
        """Canonical class of any spelling of a name (normalised first)."""
        key = normalise_disease_name(name)
        try:
            return self._lookup[key]
        except KeyError:
            close = difflib.get_close_matches(key, list(self._lookup), n=3, cutoff=0.6)
            hint = f"; closest: {', '.join(repr(c) for c in close)}" if close else ""
            shown = f"{name!r}" + (f" (normalised {key!r})" if key != name else "")
            raise UnknownLabelError(
                f"disease name {shown} is not in the vocabulary of {len(self)} classes{hint}. "
                "Rebuild it with `dermino knowledge build` on manifests that contain this label, "
                "or add a row for it to vocabulary.csv"
            ) from None

    def index(self, name: str) -> int:
        """Column of ``name`` (any spelling) among ``canonical``; UnknownLabelError if absent."""
        return self._position[self.canonical_of(name)]

    # ------------------------------------------------------------------ file
    def to_frame(self) -> pd.DataFrame:
        rows = [
            {
                "name": e.name,
                "canonical": e.canonical,
                "similarity": "" if math.isnan(e.similarity) else f"{e.similarity:.4f}",
                "count": e.count,
                "sources": _LIST_SEP.join(e.sources),
                "variants": _LIST_SEP.join(e.variants),
            }
            for e in self.entries
        ]
        return pd.DataFrame(rows, columns=FILE_COLUMNS)

    def save(self, path: str | Path) -> Path:
        """Write the reviewable CSV (one row per observed name, grouped by class), atomically."""
        path = Path(path)
        with atomic_path(path) as tmp:
            self.to_frame().to_csv(tmp, index=False)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a vocabulary CSV, possibly edited by hand, and check it is consistent.

        Names and canonical names are normalised (so "Melanocytic Naevus" typed by a clinician
        means "melanocytic nevus"). Errors name the file and line: empty cells, a name given two
        different classes, a canonical name that is itself mapped elsewhere (a chain), or a
        similarity that is not a number.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"vocabulary file not found: {path}")
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        missing = [c for c in ("name", "canonical") if c not in df.columns]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
        entries: dict[str, tuple[int, Entry]] = {}
        for i, row in enumerate(df.to_dict("records")):
            line = i + 2  # header is line 1
            raw_name, raw_canon = str(row["name"]).strip(), str(row["canonical"]).strip()
            if not raw_name and not raw_canon:
                continue  # a blank line left by an editor
            name, canon = normalise_disease_name(raw_name), normalise_disease_name(raw_canon)
            if not name:
                raise ValueError(f"{path}:{line}: empty 'name' (canonical {raw_canon!r})")
            if not canon:
                raise ValueError(f"{path}:{line}: name {raw_name!r} has an empty 'canonical'")
            entry = Entry(
                name=name,
                canonical=canon,
                similarity=_parse_float(row.get("similarity", ""), path, line),
                count=_parse_count(row.get("count", ""), path, line),
                sources=_split(row.get("sources", "")),
                variants=_split(row.get("variants", "")),
            )
            if name in entries:
                prev_line, prev = entries[name]
                if prev.canonical != canon:
                    raise ValueError(
                        f"{path}:{line}: {raw_name!r} is mapped to {canon!r}, but line {prev_line} maps "
                        f"the same name to {prev.canonical!r}; keep one row"
                    )
                continue
            entries[name] = (line, entry)
        for name, (line, entry) in entries.items():
            target = entries.get(entry.canonical)
            if target is not None and target[1].canonical != entry.canonical:
                raise ValueError(
                    f"{path}:{line}: {name!r} -> {entry.canonical!r}, but line {target[0]} maps "
                    f"{entry.canonical!r} on to {target[1].canonical!r}; point {name!r} straight at "
                    f"{target[1].canonical!r} (canonical names must map to themselves)"
                )
        if not entries:
            raise ValueError(f"{path}: the vocabulary has no rows")
        return cls([e for _, e in entries.values()])


def _split(value: object) -> tuple[str, ...]:
    return tuple(v.strip() for v in str(value or "").split(_LIST_SEP) if v.strip())


def _parse_float(value: object, path: Path, line: int) -> float:
    text = str(value or "").strip()
    if not text:
        return float("nan")
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{path}:{line}: similarity {text!r} is not a number (leave it empty if unknown)") from None


def _parse_count(value: object, path: Path, line: int) -> int:
    text = str(value or "").strip()
    if not text:
        return 0
    try:
        return int(float(text))
    except ValueError:
        raise ValueError(f"{path}:{line}: count {text!r} is not a number") from None


# ---------------------------------------------------------------------- building


def cluster_names(embeddings: np.ndarray, threshold: float) -> np.ndarray:
    """Complete-linkage cluster ids: rows i, j share an id only if every pair in the group has
    cosine similarity >= ``threshold``. ``embeddings`` are L2-normalised rows."""
    n = len(embeddings)
    if n == 0:
        return np.zeros(0, dtype=int)
    if n == 1:
        return np.zeros(1, dtype=int)
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    sim = np.clip(embeddings @ embeddings.T, -1.0, 1.0)
    dist = 1.0 - sim
    np.fill_diagonal(dist, 0.0)
    dist = (dist + dist.T) / 2  # exact symmetry for squareform
    tree = linkage(squareform(dist, checks=False), method="complete")
    # small epsilon so a pair exactly at the threshold merges despite float rounding
    return fcluster(tree, t=1.0 - threshold + 1e-6, criterion="distance") - 1


def _representative(members: list[str], counts: Mapping[str, int]) -> str:
    return min(members, key=lambda m: (-counts.get(m, 0), len(m), m))


def build_vocabulary(
    names: Iterable[str],
    encoder: TextEncoder,
    threshold: float = DEFAULT_THRESHOLD,
    sources: Mapping[str, Iterable[str]] | None = None,
    counts: Mapping[str, int] | None = None,
) -> Vocabulary:
    """Normalise ``names``, embed them, and merge near-identical ones into classes.

    ``names`` may repeat (one entry per labelled image, say): repetitions are the frequency
    used to pick a group's canonical name, unless ``counts`` (raw name -> count) is given.
    ``sources`` maps a raw name to the datasets it came from (shown in the review file).
    Empty names are ignored.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"merge threshold must be in (0, 1], got {threshold}")
    raw_counts: Counter[str] = Counter()
    for raw in names:
        if not isinstance(raw, str):
            raise TypeError(f"disease names must be strings, got {raw!r}")
        raw_counts[raw] += 1
    if counts is not None:
        raw_counts = Counter({**{k: 0 for k in raw_counts}, **{k: int(v) for k, v in counts.items()}})
    norm_counts: Counter[str] = Counter()
    variants: dict[str, set[str]] = {}
    norm_sources: dict[str, set[str]] = {}
    for raw, c in raw_counts.items():
        name = normalise_disease_name(raw)
        if not name:
            continue
        norm_counts[name] += c
        if raw != name:
            variants.setdefault(name, set()).add(raw)
        norm_sources.setdefault(name, set()).update((sources or {}).get(raw, ()))
    unique = sorted(norm_counts)
    emb = encoder.encode(unique) if unique else np.zeros((0, 1), dtype=np.float32)
    groups = cluster_names(emb, threshold)
    entries: list[Entry] = []
    for gid in np.unique(groups):
        idx = np.flatnonzero(groups == gid)
        members = [unique[i] for i in idx]
        rep = _representative(members, norm_counts)
        rep_vec = emb[unique.index(rep)]
        for i, m in zip(idx, members, strict=True):
            entries.append(Entry(
                name=m,
                canonical=rep,
                similarity=1.0 if m == rep else float(np.clip(emb[i] @ rep_vec, -1.0, 1.0)),
                count=int(norm_counts[m]),
                sources=tuple(sorted(norm_sources.get(m, ()))),
                variants=tuple(sorted(variants.get(m, ()))),
            ))
    return Vocabulary(entries, threshold=threshold, encoder=getattr(encoder, "name", None))


def nearest_unmerged(vocab: Vocabulary, encoder: TextEncoder, k: int = 5) -> list[tuple[str, str, float]]:
    """The ``k`` most similar pairs of *different* classes: what a reviewer checks to see
    whether the threshold is too strict (a missed synonym shows up here)."""
    names = vocab.canonical
    if len(names) < 2:
        return []
    emb = encoder.encode(names)
    sim = emb @ emb.T
    iu = np.triu_indices(len(names), 1)
    order = np.argsort(-sim[iu], kind="stable")[:k]
    return [(names[iu[0][o]], names[iu[1][o]], float(sim[iu][o])) for o in order]
