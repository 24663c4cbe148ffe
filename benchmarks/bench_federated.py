"""Federated fine-tuning on real data: federated vs each site alone vs pooled, on the three default partitions.

Partitions (configs/federated/): the three datasets as sites (HAM10000 / PH2 / ISIC 2017), HAM10000
by ``dx_type`` and HAM10000 by body site. For each: the in-process simulation with the paper's
settings (FedAvg, 2 rounds x 2 local epochs, lr 2e-4; ``--lr`` to change), then the comparison
(macro AUROC / F1, 1,000-resample bootstrap CIs, paired tests against the federated model).
Prints the tables and seconds per round, writes ``benchmarks/results/federated.json``.

The backbone is a frozen ViT-Tiny/14 (4 blocks): random initialisation unless ``--weights`` gives a
pretrained checkpoint (e.g. the export of ``benchmarks/evidence_cpu.py``). Features are cached, so a
rerun skips the embedding; every image is embedded once for all three partitions. ``--max-per-source``
keeps the run inside ~15 minutes on 2 busy CPU cores (0 = every labelled image).

    nice -n 10 python benchmarks/bench_federated.py --data ../shared/data --out runs/bench_federated
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARTITIONS = {"sites": "sites.yaml", "ham10000-dx_type": "ham10000_dx_type.yaml", "ham10000-site": "ham10000_site.yaml"}


def subsample(path: Path, n: int, dest: Path) -> Path:
    """At most ``n`` labelled rows of a manifest, stratified by label and seeded (unlabelled rows dropped)."""
    from dermino.data.manifest import read_manifest, write_manifest

    df = read_manifest(path)
    df = df[df["labels"] != ""]
    if len(df) > n:
        df = df.groupby("labels", group_keys=False).sample(frac=n / len(df), random_state=0)
    return write_manifest(df, dest, root=read_manifest(path).attrs["root"])


def main() -> None:
    from dermino.demo import prepare_published
    from dermino.federated.compare import compare, summary
    from dermino.federated.config import load_federated_config
    from dermino.federated.simulation import simulate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="folder with ham10000/, ph2/, isic2017/ (published layouts)")
    ap.add_argument("--out", default="runs/bench_federated")
    ap.add_argument("--weights", default=None, help="pretrained backbone checkpoint (default: random init)")
    ap.add_argument("--image-size", type=int, default=56)
    ap.add_argument("--pool", default="mean", help="cls | mean | cls+mean (a random-init ViT's CLS token is "
                    "nearly constant across images: use mean unless --weights is pretrained)")
    ap.add_argument("--max-per-source", type=int, default=1500,
                    help="labelled rows kept per dataset (seeded, stratified by label; 0 = all)")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--strategy", default="fedavg", choices=["fedavg", "fedprox"])
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--partitions", nargs="*", default=list(PARTITIONS))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    out = Path(args.out)
    manifests = prepare_published(Path(args.data), out / "manifests", seed=0)
    if args.max_per_source:
        manifests = {k: subsample(p, args.max_per_source, out / "manifests" / f"{k}_sub.csv")
                     for k, p in manifests.items()}
    manifest_list = "[" + ",".join(str(manifests[k]) for k in ("ham10000", "ph2", "isic2017")) + "]"
    report: dict = {"settings": vars(args), "partitions": {}}
    for name in args.partitions:
        cfg = load_federated_config(str(REPO / "configs" / "federated" / PARTITIONS[name]), [
            f"data.manifests={manifest_list}", f"out_dir={out / name}", "backbone.model=dermino_vit_tiny_14",
            "backbone.overrides.depth=4", f"embed.image_size={args.image_size}", f"embed.pool={args.pool}",
            f"embed.cache_dir={out / 'cache'}",
            f"train.lr={args.lr}", f"strategy.rounds={args.rounds}", f"strategy.name={args.strategy}",
            f"compare.n_resamples={args.resamples}", "progress=false",
            *([f"backbone.weights={args.weights}"] if args.weights else []),
        ])
        t = time.perf_counter()
        if name == args.partitions[0]:  # embed every image once; the other partitions reuse them
            from dermino.federated.partitions import load_manifests
            from dermino.federated.task import preload_features

            preload_features(cfg, load_manifests(cfg.data.__class__(manifests=cfg.data.manifests), out))
            report["embed_seconds"] = time.perf_counter() - t
            t = time.perf_counter()
        history = simulate(cfg)
        t_sim = time.perf_counter() - t
        t = time.perf_counter()
        folder = compare(cfg)
        t_cmp = time.perf_counter() - t
        table = (folder / "comparison.md").read_text()
        print(f"\n## {name} ({cfg.data.column}: {', '.join(history['clients'].values())})\n")
        print(table, flush=True)
        print("seconds per round (after features are cached): "
              + ", ".join(f"{r}: {s:.2f}" for r, s in history["seconds_per_round"].items())
              + f"; simulation total {t_sim:.1f}s (embedding included), comparison {t_cmp:.1f}s", flush=True)
        report["partitions"][name] = {
            "clients": history["clients"], "seconds_per_round": history["seconds_per_round"],
            "simulation_seconds": t_sim, "compare_seconds": t_cmp, "results": summary(folder),
            "federated_evaluate": history["evaluate"],
        }
        dest = REPO / "benchmarks" / "results" / "federated.json"  # after every partition: nothing lost
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(report, indent=2, default=float))
    print(f"\nwrote {dest}")


if __name__ == "__main__":
    main()
