"""``dermino maps``: 2-D maps of a backbone's image embeddings and of the disease prototypes."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("maps", help="t-SNE / UMAP maps of image embeddings and disease prototypes (PNG)")
    p.add_argument("--backbone", required=True,
                   help="registered name (e.g. dermino_vit_small_14) or an export folder (runs/x/export/teacher)")
    p.add_argument("--weights", default=None, help="local checkpoint file")
    p.add_argument("--manifest", required=True, nargs="+", help="manifest(s) CSV/Parquet")
    p.add_argument("--split", default=None, help="only rows of this split")
    p.add_argument("--prototypes", default=None, help="prototypes.safetensors of `dermino knowledge build`")
    p.add_argument("--method", choices=("tsne", "umap"), default="tsne")
    p.add_argument("--out", required=True, type=Path, help="folder for the PNGs, coordinate CSVs and maps.json")
    p.add_argument("--set", dest="overrides", nargs="*", default=[], help="EmbedConfig overrides")
    p.add_argument("--model-arg", dest="model_args", nargs="*", default=[], help="backbone constructor overrides")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd
    import yaml

    from dermino.config import load_config
    from dermino.data.manifest import read_manifest, resolve
    from dermino.evaluate.maps import write_maps
    from dermino.features import EmbedConfig, extract_embeddings
    from dermino.models import create

    cfg = load_config(EmbedConfig, None, args.overrides)
    frames = []
    for m in args.manifest:
        df = read_manifest(m)
        df["image"] = [str(resolve(df, v)) for v in df["image"]]
        frames.append(df if not args.split else df[df["split"] == args.split])
    df = pd.concat(frames, ignore_index=True)
    df.attrs["root"] = "/"
    kwargs = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.model_args)}
    weights = args.weights
    if Path(args.backbone).is_dir():
        from dermino.models import load_exported

        model, weights = load_exported(args.backbone), Path(args.backbone) / "model.safetensors"
    else:
        model = create(args.backbone, weights=args.weights, **kwargs)
    emb = extract_embeddings(model, df, cfg, weights=weights, model_name=str(args.backbone))
    protos, names = None, None
    if args.prototypes:
        from dermino.knowledge.prototypes import read_prototypes

        w, names, _ = read_prototypes(args.prototypes)
        protos = np.asarray(w.float().numpy())
    meta = write_maps(emb.features, df, args.out, method=args.method, prototypes=protos, prototype_names=names,
                      title=Path(args.backbone).name)
    print(f"maps: {meta} (add them to a report: dermino report RESULTS --maps {args.out})")
    return 0
