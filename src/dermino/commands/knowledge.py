"""``dermino knowledge``: build the disease vocabulary and prototype matrix from manifests.

``build`` reads the ``labels``/``label_space`` columns of one or more manifests, merges the
disease names, and writes ``vocabulary.csv`` (for a clinician to review and edit) and
``prototypes.safetensors`` (W for the knowledge loss). ``prototypes`` re-embeds W after the
vocabulary file was edited.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from dermino.data.manifest import read_manifest
from dermino.knowledge.encoder import DEFAULT_ENCODER, load_text_encoder
from dermino.knowledge.names import collect_names
from dermino.knowledge.prototypes import PROTOTYPES_FILE, VOCABULARY_FILE, prototype_matrix, save_prototypes
from dermino.knowledge.vocabulary import DEFAULT_THRESHOLD, Vocabulary, build_vocabulary, nearest_unmerged

_MAX_LISTED = 40


def _read_extra_names(spec: str) -> list[str]:
    """``FILE.csv:COLUMN`` (or ``FILE.txt``, one name a line) -> names, one per row."""
    path, _, column = spec.partition(":") if not Path(spec).is_file() else (spec, "", "")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"names file not found: {p}")
    if p.suffix.lower() == ".csv":
        df = pd.read_csv(p, dtype=str, keep_default_na=False)
        column = column or "label"
        if column not in df.columns:
            raise ValueError(f"{p}: no column {column!r} (columns: {list(df.columns)}); use FILE.csv:COLUMN")
        return [v for v in df[column] if v.strip()]
    return [line.strip() for line in p.read_text().splitlines() if line.strip()]


def _summary(vocab: Vocabulary, n_raw: int, encoder, out: Path, dim: int) -> None:
    n_names = len(vocab.entries)
    merged = vocab.merges()
    print(f"disease names: {n_raw} distinct spellings -> {n_names} after normalisation -> "
          f"{len(vocab)} classes (threshold {vocab.threshold}, encoder {vocab.encoder})")
    renamed = [(v, e.name) for e in vocab.entries for v in e.variants]
    print(f"normalisation rewrote {len(renamed)} spelling(s)" + (":" if renamed else ""))
    for raw, name in renamed[:_MAX_LISTED]:
        print(f"  {raw!r} -> {name!r}")
    print(f"similarity merged {len(merged)} name(s)" + (":" if merged else ""))
    for e in merged[:_MAX_LISTED]:
        print(f"  {e.name!r} -> {e.canonical!r}  (cosine {e.similarity:.3f})")
    near = nearest_unmerged(vocab, encoder, k=5)
    if near:
        print("most similar classes kept apart (check the threshold):")
        for a, b, s in near:
            print(f"  {a!r} | {b!r}  (cosine {s:.3f})")
    print(f"wrote {out / VOCABULARY_FILE} (review/edit it) and {out / PROTOTYPES_FILE} ({len(vocab)} x {dim})")


def cmd_build(args: argparse.Namespace) -> int:
    if not 0.0 < args.threshold <= 1.0:
        raise ValueError(f"--threshold must be in (0, 1], got {args.threshold}")
    manifests = [read_manifest(p) for p in args.manifests]
    counts, sources = collect_names(manifests)
    for spec in args.names or []:
        for name in _read_extra_names(spec):
            counts[name] += 1
            sources.setdefault(name, set()).add(Path(spec.partition(":")[0]).stem)
    if not counts:
        raise ValueError(f"no disease names in the labels/label_space columns of {', '.join(args.manifests)}")
    encoder = load_text_encoder(args.encoder, device=args.device)
    vocab = build_vocabulary(list(counts), encoder, threshold=args.threshold, sources=sources, counts=counts)
    out = Path(args.out)
    vocab.save(out / VOCABULARY_FILE)
    pooled = load_text_encoder(args.encoder, device=args.device, pooling=args.pooling)
    weight = prototype_matrix(vocab, pooled)
    save_prototypes(out / PROTOTYPES_FILE, weight, vocab, encoder=args.encoder, pooling=args.pooling)
    _summary(vocab, len(counts), encoder, out, weight.shape[1])
    return 0


def cmd_prototypes(args: argparse.Namespace) -> int:
    vocab = Vocabulary.load(args.vocabulary)
    encoder = load_text_encoder(args.encoder, device=args.device, pooling=args.pooling)
    weight = prototype_matrix(vocab, encoder)
    out = Path(args.out)
    path = save_prototypes(out / PROTOTYPES_FILE, weight, vocab, encoder=args.encoder, pooling=args.pooling)
    if Path(args.vocabulary).resolve() != (out / VOCABULARY_FILE).resolve():
        vocab.save(out / VOCABULARY_FILE)
    print(f"wrote {path} ({len(vocab)} classes x {weight.shape[1]}) from {args.vocabulary}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("knowledge", help="disease vocabulary and prototypes for the knowledge loss")
    sub = parser.add_subparsers(dest="knowledge_command", metavar="ACTION")
    sub.required = True

    build = sub.add_parser("build", help="merge the disease names of manifests; write vocabulary.csv + prototypes")
    build.add_argument("manifests", nargs="+", metavar="MANIFEST", help="manifest CSV/Parquet files")
    build.add_argument("--out", default="knowledge", help="output folder (default: knowledge/)")
    build.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                       help=f"cosine similarity at which names merge (default {DEFAULT_THRESHOLD})")
    build.add_argument("--encoder", default=DEFAULT_ENCODER, help="text encoder name or path")
    build.add_argument("--names", action="append", metavar="FILE[:COLUMN]",
                       help="extra vocabulary: a CSV column (default 'label') or a text file, one name a line")
    build.add_argument("--pooling", choices=["mean", "cls"], default="mean",
                       help="pool the text encoder's tokens for W by mean (default) or CLS (recorded in the file)")
    build.add_argument("--device", default="cpu")
    build.set_defaults(func=cmd_build)

    proto = sub.add_parser("prototypes", help="re-embed W from a (hand-edited) vocabulary.csv")
    proto.add_argument("--vocabulary", required=True, help="vocabulary CSV")
    proto.add_argument("--out", default="knowledge", help="output folder (default: knowledge/)")
    proto.add_argument("--encoder", default=DEFAULT_ENCODER, help="text encoder name or path")
    proto.add_argument("--pooling", choices=["mean", "cls"], default="mean",
                       help="pool the text encoder's tokens for W by mean (default) or CLS (recorded in the file)")
    proto.add_argument("--device", default="cpu")
    proto.set_defaults(func=cmd_prototypes)
