"""``dermino index build``: the similar-case index a server uses.

Under ``torchrun --nproc_per_node N -m dermino.cli index build ...`` the embedding is shared out
across the ranks by chunk (``dermino.sharding``); rank 0 writes the index and prints the summary.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("index", help="similar-case index of reference images")
    sub = p.add_subparsers(dest="index_command", metavar="ACTION")
    sub.required = True
    b = sub.add_parser("build", help="embed a manifest's labelled reference cases (or add to an index)")
    b.add_argument("--manifest", required=True)
    b.add_argument("--classifier", required=True, help="classifier folder: its backbone embeds the cases")
    b.add_argument("--out", required=True, help="index folder")
    b.add_argument("--splits", nargs="*", default=["train", "val"],
                   help="manifest splits to index (default: train val; never index your test set)")
    b.add_argument("--append", action="store_true", help="add images not yet in the index at --out")
    b.add_argument("--backend", choices=["auto", "torch", "faiss"], default="auto")
    b.add_argument("--cache-dir", default="", help="embedding cache (default: cache/embeddings beside --out)")
    b.add_argument("--device", default="cpu", help="cpu, cuda (under torchrun: each rank's own GPU), cuda:N")
    b.add_argument("--chunk-size", type=int, default=None,
                   help="rows per cached embedding chunk (default 1024): the unit of resuming and of sharing "
                        "out across torchrun processes")
    b.set_defaults(func=_build)


def _build(args: argparse.Namespace) -> int:
    from dermino.classifier.model import load_classifier
    from dermino.serve.index_build import build_index
    from dermino.sharding import torchrun_shard

    if args.chunk_size is not None and args.chunk_size < 1:
        raise ValueError(f"--chunk-size must be at least 1, got {args.chunk_size}")
    with torchrun_shard(args.device) as shard:
        clf = load_classifier(args.classifier, device=shard.device(args.device))
        index = build_index(clf, args.manifest, args.out, splits=args.splits, append=args.append,
                            backend=args.backend, cache_dir=args.cache_dir, chunk_size=args.chunk_size,
                            shard=shard)
    if index is None:  # another rank's share is done; rank 0 writes and reports
        return 0
    labels: dict[str, int] = {}
    for r in index.records:
        labels[r["label"]] = labels.get(r["label"], 0) + 1
    print(f"index: {len(index)} cases in {args.out} (search: {'faiss' if index.uses_faiss else 'torch'})")
    for name, n in sorted(labels.items(), key=lambda kv: -kv[1]):
        print(f"  {n:6d}  {name}")
    return 0
