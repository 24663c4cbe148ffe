"""``dermino embed``: extract (and cache) features of a manifest with one backbone.

Under ``torchrun --nproc_per_node N -m dermino.cli embed ...`` the cached chunks are shared
out across the ranks (``dermino.sharding``); rank 0 writes ``--out`` and prints the summary.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("embed", help="extract and cache backbone features for a manifest")
    p.add_argument("--backbone", required=True, help="registered name, e.g. dermino_vit_small_14")
    p.add_argument("--weights", default=None, help="local checkpoint file")
    p.add_argument("--manifest", required=True, help="manifest CSV/Parquet")
    p.add_argument("--split", default=None, help="only rows of this split")
    p.add_argument("--out", default=None,
                   help="also write features to this .npy file (the cache then lives in cache/ beside it)")
    p.add_argument("--patch", action="store_true",
                   help="write patch tokens (N, P, D) to --out instead of pooled features (not cached)")
    p.add_argument("--set", dest="overrides", nargs="*", default=[],
                   help="EmbedConfig overrides, e.g. image_size=112 pool=cls+mean batch_size=32")
    p.add_argument("--model-arg", dest="model_args", nargs="*", default=[],
                   help="backbone constructor overrides, e.g. depth=2 embed_dim=64")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import numpy as np
    import yaml

    from dermino.config import load_config
    from dermino.data.manifest import read_manifest
    from dermino.features import EmbedConfig, extract_embeddings
    from dermino.files import atomic_path
    from dermino.models import create
    from dermino.sharding import torchrun_shard

    cfg = load_config(EmbedConfig, None, args.overrides)
    if not cfg.cache_dir:  # beside the output when there is one, else the documented cache folder
        cfg.cache_dir = str(Path(args.out).parent / "cache" / "embeddings") if args.out else ""
    df = read_manifest(args.manifest)
    if args.split:
        root = df.attrs["root"]
        df = df[df["split"] == args.split].reset_index(drop=True)
        df.attrs["root"] = root
    kwargs = {}
    for item in args.model_args:
        if "=" not in item:
            raise ValueError(f"--model-arg {item!r} must look like key=value")
        k, v = item.split("=", 1)
        kwargs[k] = yaml.safe_load(v)
    if args.patch:
        return _run_patch(args, cfg, df, kwargs)
    with torchrun_shard(cfg.device) as shard:
        cfg.device = shard.device(cfg.device)
        model = create(args.backbone, weights=args.weights, **kwargs)
        emb = extract_embeddings(model, df, cfg, weights=args.weights, model_name=args.backbone, shard=shard)
        if not shard.is_main:
            return 0
    if args.out:
        with atomic_path(args.out) as tmp, open(tmp, "wb") as fh:
            np.save(fh, emb.features)
    print(json.dumps({"cache": str(emb.path), "key": emb.key, "rows": len(emb.features),
                      "dim": int(emb.features.shape[1]), "computed_rows": emb.computed_rows,
                      "processes": shard.world_size, "transform": emb.meta["transform"],
                      "preprocessing": emb.meta.get("preprocessing")}, indent=2))
    return 0


def _run_patch(args: argparse.Namespace, cfg, df, kwargs: dict) -> int:
    """Patch tokens of every row, written batch by batch into a memory-mapped .npy."""
    import numpy as np

    from dermino.api import load
    from dermino.features import image_paths
    from dermino.progress import tqdm
    from dermino.sharding import launched_by_torchrun

    if launched_by_torchrun():
        raise ValueError("--patch is not shared out across torchrun processes: run it as one process")
    if not args.out:
        raise ValueError("--patch needs --out FILE.npy (patch features are large and not cached)")
    model = load(args.backbone, weights=args.weights, image_size=cfg.image_size, device=cfg.device,
                 preprocess=cfg.preprocess, **kwargs)
    paths = image_paths(df)
    first = model.embed(paths[:1], pool="patch")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".partial.npy")
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(paths), *first.shape[1:]))
    for lo in tqdm(range(0, len(paths), cfg.batch_size), desc="embed --patch", unit="batch"):
        arr[lo: lo + cfg.batch_size] = model.embed(paths[lo: lo + cfg.batch_size], pool="patch")
    arr.flush()
    del arr
    tmp.replace(out)
    ps = model.config["patch_size"] or 1
    side = model.transform.image_size // ps  # a baseline's own resolution when it has one
    info = {"out": str(out), "rows": len(paths), "patches": int(first.shape[1]), "dim": int(first.shape[2]),
            "grid": [side, side] if side * side == first.shape[1] else None,
            "transform": model.config["transform"]}
    out.with_suffix(".json").write_text(json.dumps(info, indent=2))
    print(json.dumps(info, indent=2))
    return 0
