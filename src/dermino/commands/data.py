"""``dermino data``: prepare, info, check, sample, download, cache, cache-verify."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from dermino.data.adapters import ADAPTERS, DOWNLOADERS, build
from dermino.data.check import check_images
from dermino.data.info import format_summary, summarize
from dermino.data.manifest import read_manifest, require_valid, validate_manifest, write_manifest
from dermino.data.splits import assign_splits
from dermino.files import write_text_atomic

log = logging.getLogger("dermino.data")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help="build, inspect and check image manifests")
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    sub.required = True

    q = sub.add_parser("prepare", help="turn a dataset folder into a manifest with splits")
    q.add_argument("name", choices=sorted(ADAPTERS), help="dataset adapter")
    q.add_argument("--root", required=True, type=Path, help="dataset folder (published layout)")
    q.add_argument("--out", required=True, type=Path, help="manifest to write (.csv or .parquet)")
    q.add_argument("--split-seed", type=int, default=0)
    q.add_argument("--test-fraction", type=float, default=0.5, help="share of unassigned rows for test")
    q.add_argument("--val-fraction", type=float, default=0.1, help="share of the new train part for val")
    q.add_argument("--group-col", default="lesion_id", help="rows sharing this id stay in one split")
    q.add_argument("--resplit", action="store_true", help="ignore official splits, re-assign every row")
    q.add_argument("--csv", help="folder adapter: a CSV listing the images (relative to --root)")
    q.add_argument("--map", help="folder adapter: column mapping, e.g. image=file,labels=diagnosis")
    q.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="extra adapter option (repeatable), e.g. --opt include_test=false")
    q.set_defaults(func=_prepare)

    q = sub.add_parser("info", help="counts by source, split, label, sex, age band, skin type")
    q.add_argument("manifest", type=Path)
    q.add_argument("--json", action="store_true", help="print JSON instead of text")
    q.set_defaults(func=_info)

    q = sub.add_parser("check", help="validate a manifest and decode every file; exit 1 on any problem")
    q.add_argument("manifest", type=Path)
    q.add_argument("--workers", type=int, default=4)
    q.add_argument("--no-decode", action="store_true", help="only validate the table and file existence")
    q.add_argument("--no-masks", action="store_true", help="do not decode masks")
    q.set_defaults(func=_check)

    q = sub.add_parser("sample", help="write manifests of the bundled sample")
    q.add_argument("--out", required=True, type=Path, help="folder for ham10000.csv, ph2.csv, isic2017.csv")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=_sample)

    q = sub.add_parser("download", help="fetch a dataset where its licence allows, else print how")
    q.add_argument("name", choices=sorted(DOWNLOADERS))
    q.add_argument("--out", required=True, type=Path)
    q.set_defaults(func=_download)

    q = sub.add_parser("dedup", help="exact and near-duplicate images within and across manifests")
    q.add_argument("manifests", nargs="+", type=Path, help="corpus manifests (e.g. pretraining data)")
    q.add_argument("--against", nargs="*", default=[], type=Path,
                   help="evaluation manifests: corpus images duplicating one of these are dropped")
    q.add_argument("--out", required=True, type=Path,
                   help="folder for report.html, pairs.csv, summary.json and <name>.dedup.csv")
    q.add_argument("--backbone", default=None,
                   help="confirm candidates with this backbone's embedding cosine (default: model-free)")
    q.add_argument("--weights", default=None, help="local checkpoint for --backbone")
    q.add_argument("--max-hamming", type=int, default=10, help="pHash bits (of 64) a candidate may differ in")
    q.add_argument("--min-cosine", type=float, default=None,
                   help="similarity confirming a candidate (default 0.9; 0.95 with --backbone)")
    q.add_argument("--workers", type=int, default=1, help="processes for hashing")
    q.add_argument("--cache-dir", default="", help="per-chunk hashes, for resuming (default: $DERMINO_CACHE/dedup)")
    q.add_argument("--chunk-size", type=int, default=None,
                   help="images per cached hash chunk (default 2048): the unit of resuming and of sharing "
                        "out across torchrun processes")
    q.set_defaults(func=_dedup)

    q = sub.add_parser("cache", help="pre-resized, sharded copy of the images (WebDataset tars) for fast loading")
    q.add_argument("manifests", nargs="+", type=Path, metavar="MANIFEST")
    q.add_argument("--size", type=int, default=256, help="shorter side in px (smaller images are kept as is)")
    q.add_argument("--out", required=True, type=Path, help="cache folder (rerun the same command to resume)")
    q.add_argument("--format", choices=["png", "jpg"], default="png",
                   help="png: lossless, exact; jpg: ~4x smaller, faster to decode, lossy (--quality)")
    q.add_argument("--quality", type=int, default=95, help="JPEG quality (--format jpg)")
    q.add_argument("--shard-size", type=int, default=1000, help="images per shard")
    q.add_argument("--workers", type=int, default=4, help="parallel processes")
    q.set_defaults(func=_cache)

    q = sub.add_parser("cache-verify", help="check an image cache: every shard present, sized and checksummed")
    q.add_argument("folder", type=Path)
    q.set_defaults(func=_cache_verify)


def _parse_opts(items: list[str]) -> dict[str, object]:
    opts: dict[str, object] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--opt '{item}': expected KEY=VALUE")
        k, v = item.split("=", 1)
        low = v.strip().lower()
        opts[k.strip()] = True if low == "true" else False if low == "false" else v
    return opts


def _prepare(args: argparse.Namespace) -> int:
    opts = _parse_opts(args.opt)
    if args.csv:
        opts["csv"] = args.csv
    if args.map:
        opts["map"] = args.map
    if (args.csv or args.map) and args.name != "folder":
        raise ValueError("--csv/--map are options of the 'folder' adapter")
    df = build(args.name, args.root, **opts)
    missing = df.attrs.get("missing_images", [])
    skipped = df.attrs.get("skipped_entries", [])  # symlink loops, broken links, unreadable entries
    if len(df) == 0:
        print(f"{args.name}: no images found under {args.root} ({len(missing)} listed but absent); "
              "nothing written")
        return 1
    df = assign_splits(df, test_fraction=args.test_fraction, val_fraction=args.val_fraction,
                       group_col=args.group_col or None, seed=args.split_seed,
                       only_unassigned=not args.resplit)
    require_valid(df, check_files=True, name=f"{args.name} manifest")
    path = write_manifest(df, args.out)
    counts = df["split"].value_counts().to_dict()
    print(f"{args.name}: {len(df)} images -> {path}  splits {counts}"
          + (f"  ({len(missing)} listed images missing)" if missing else ""))
    if missing:
        miss_path = path.with_name(path.stem + ".missing.txt")
        write_text_atomic(miss_path, "\n".join(missing) + "\n")
        print(f"missing images listed in {miss_path}")
    if skipped:
        skip_path = path.with_name(path.stem + ".skipped.txt")
        write_text_atomic(skip_path, "\n".join(skipped) + "\n")
        print(f"{len(skipped)} entries skipped (symlink loops, broken links, unreadable): listed in {skip_path}")
        for line in skipped[:5]:
            print(f"  skipped: {line.replace(chr(9), '  ')}")
    return 0


def _info(args: argparse.Namespace) -> int:
    s = summarize(read_manifest(args.manifest))
    print(json.dumps(s, indent=2) if args.json else format_summary(s))
    return 0


def _check(args: argparse.Namespace) -> int:
    df = read_manifest(args.manifest)
    problems = validate_manifest(df, check_files=True)
    bad = [] if args.no_decode else check_images(df, workers=args.workers, masks=not args.no_masks)
    for p in problems:
        print(f"PROBLEM {p}")
    for b in bad:
        print(f"BAD {b}")
    if problems or bad:
        print(f"{args.manifest}: {len(problems)} table problem(s), {len(bad)} unreadable file(s)")
        return 1
    print(f"{args.manifest}: OK ({len(df)} rows)")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from dermino.data.sample import sample_manifests

    for name, path in sample_manifests(args.out, seed=args.seed).items():
        print(f"{name}: {path}")
    return 0


def _download(args: argparse.Namespace) -> int:
    DOWNLOADERS[args.name](args.out)
    return 0


def _dedup(args: argparse.Namespace) -> int:
    """Under torchrun the hashing and descriptors are shared out by chunk; rank 0 writes the report."""
    from dermino.data.dedup import DedupConfig, find_duplicates, write_outputs
    from dermino.features.embedder import backbone_embedder
    from dermino.sharding import torchrun_shard

    chunk = {"chunk_size": args.chunk_size} if args.chunk_size else {}
    cfg = DedupConfig(max_hamming=args.max_hamming, workers=args.workers, cache_dir=args.cache_dir, **chunk,
                      min_cosine=args.min_cosine if args.min_cosine is not None
                      else (0.95 if args.backbone else 0.9))
    with torchrun_shard("cpu") as shard:
        embedder = backbone_embedder(args.backbone, args.weights) if args.backbone else None
        result = find_duplicates(args.manifests, args.against, cfg, embedder=embedder, shard=shard)
    if result is None:  # another rank's share is done; rank 0 reports
        return 0
    written = write_outputs(result, args.out)
    s = result.stats
    print(f"{s['images']} images: {s['exact_pairs']} exact and {s['near_pairs']} near-duplicate pairs "
          f"({s['candidate_pairs']} pHash candidates); corpus kept {s['corpus_kept']} of {s['corpus_images']} "
          f"(dropped {s['corpus_dropped_as_test_overlap']} overlapping evaluation images, "
          f"{s['corpus_dropped_as_internal_duplicate']} internal duplicates)")
    for name, path in written.items():
        print(f"  {name}: {path}")
    return 0


def _cache(args: argparse.Namespace) -> int:
    from dermino.data.cache import build_cache, cache_summary

    report = build_cache(args.manifests, args.out, size=args.size, fmt=args.format, quality=args.quality,
                         shard_size=args.shard_size, workers=args.workers)
    print(cache_summary(report))
    for path, why in list(report.failed.items())[:20]:
        print(f"UNREADABLE {path}: {why}")
    return 1 if report.bad_shards else 0


def _cache_verify(args: argparse.Namespace) -> int:
    from dermino.data.cache import cache_summary, verify_cache

    report = verify_cache(args.folder, checksums=True)
    print(cache_summary(report))
    for name, why in report.bad_shards.items():
        print(f"BAD {args.folder / name}: {why}")
    return 1 if report.bad_shards else 0
