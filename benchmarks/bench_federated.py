"""Federated fine-tuning on real data: federated vs each site alone vs pooled, on the three default partitions.

Partitions (configs/federated/): the three datasets as sites (HAM10000 / PH2 / ISIC 2017), HAM10000
by ``dx_type`` and HAM10000 by body site. For each partition and each trainable part
(``--trainable``: ``head``, ``last_blocks``, ``lora``) two settings are reported:

* ``paper``: the paper's FedAvg, 2 rounds x 2 local epochs, lr 2e-4;
* ``tuned``: the same budget (rounds, epochs) with the learning rate that gave the lowest federated
  *validation* loss (count-weighted over the sites, last round) among ``--lrs-<mode>`` and the paper's
  lr. Chosen per partition and mode on the sites' validation rows, never on test rows: the paper's
  lr was meant for fine-tuning a whole network, a linear head or a few blocks need larger steps.

Then the comparison (macro AUROC / F1, bootstrap CIs, paired tests against the federated model) of
both settings. Prints the tables and seconds per round, writes ``benchmarks/results/federated.json``
(after every run: nothing lost on a crash) and ``benchmarks/results/federated.md``.

The backbone is frozen except for the trainable part: ``--weights`` gives a pretrained dermino
backbone (e.g. ``teacher_backbone.pt`` exported by ``dermino pretrain`` / the demo; its
architecture via ``--depth``), else a random-init one (then nothing is learnt worth reporting).
``--exclude`` drops the rows (by image id and lesion id) of manifests the backbone was pretrained
on. ``--max-per-source`` caps labelled rows per dataset (seeded, stratified) to keep the run short
on CPU; the frozen part runs once per image for all partitions.

    nice -n 10 python benchmarks/bench_federated.py --data DATA --weights teacher_backbone.pt \\
        --exclude demo_output/manifests/*.csv --image-size 98 --out runs/bench_federated
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARTITIONS = {"sites": "sites.yaml", "ham10000-dx_type": "ham10000_dx_type.yaml", "ham10000-site": "ham10000_site.yaml"}
PAPER_LR = 2e-4


def subsample(path: Path, n: int, dest: Path, exclude: tuple[set, set]) -> Path:
    """At most ``n`` labelled rows of a manifest, stratified by label and seeded; rows whose image id
    or lesion id is in ``exclude`` (the backbone's pretraining images) are dropped first."""
    from dermino.data.manifest import read_manifest, write_manifest

    df = read_manifest(path)
    df = df[df["labels"] != ""]
    stems, lesions = exclude
    keep = ~df["image"].map(lambda p: Path(str(p)).stem).isin(stems)
    if "lesion_id" in df.columns:
        keep &= ~(df["lesion_id"].astype(str).isin(lesions) & (df["lesion_id"].astype(str) != ""))
    df = df[keep]
    if n and len(df) > n:
        df = df.groupby("labels", group_keys=False).sample(frac=n / len(df), random_state=0)
    return write_manifest(df, dest, root=read_manifest(path).attrs["root"])


def excluded(manifests: list[str]) -> tuple[set, set]:
    from dermino.data.manifest import read_manifest

    stems, lesions = set(), set()
    for m in manifests:
        df = read_manifest(m)
        stems |= {Path(str(p)).stem for p in df["image"]}
        if "lesion_id" in df.columns:
            lesions |= {str(v) for v in df["lesion_id"] if str(v)}
    return stems, lesions


def weighted_val_loss(history: dict) -> float:
    last = history["evaluate"][str(max(int(r) for r in history["evaluate"]))]
    return float(last["val-loss"])


def main() -> None:
    from dermino.demo import prepare_published
    from dermino.federated.compare import compare, summary
    from dermino.federated.config import load_federated_config
    from dermino.federated.partitions import load_manifests
    from dermino.federated.simulation import simulate
    from dermino.federated.trainable import preload_inputs

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="folder with ham10000/, ph2/, isic2017/ (published layouts)")
    ap.add_argument("--out", default="runs/bench_federated")
    ap.add_argument("--weights", default=None, help="pretrained backbone checkpoint (default: random init)")
    ap.add_argument("--depth", type=int, default=4, help="blocks of the ViT-Tiny/14 (must match --weights)")
    ap.add_argument("--exclude", nargs="*", default=[], help="manifests of the backbone's pretraining images")
    ap.add_argument("--image-size", type=int, default=56)
    ap.add_argument("--pool", default="cls", help="cls | mean | cls+mean (random init: use mean)")
    ap.add_argument("--max-per-source", type=int, default=1500,
                    help="labelled rows kept per dataset (seeded, stratified by label; 0 = all)")
    ap.add_argument("--trainable", nargs="*", default=["head", "last_blocks"], choices=["head", "last_blocks", "lora"])
    ap.add_argument("--last-k", type=int, default=1)
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--lrs-head", default="2e-3,2e-2", help="candidate lrs for `tuned` (besides the paper's)")
    ap.add_argument("--lrs-last_blocks", default="1e-3,5e-3")
    ap.add_argument("--lrs-lora", default="1e-3,5e-3")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--local-epochs", type=int, default=2)
    ap.add_argument("--strategy", default="fedavg", choices=["fedavg", "fedprox"])
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--partitions", nargs="*", default=list(PARTITIONS))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    out = Path(args.out)
    t_all = time.perf_counter()
    manifests = prepare_published(Path(args.data), out / "manifests", seed=0)
    drop = excluded(args.exclude)
    manifests = {k: subsample(p, args.max_per_source, out / "manifests" / f"{k}_sub.csv", drop)
                 for k, p in manifests.items()}
    manifest_list = "[" + ",".join(str(manifests[k]) for k in ("ham10000", "ph2", "isic2017")) + "]"
    report: dict = {"settings": vars(args), "excluded_images": len(drop[0]), "partitions": {}}
    dest = REPO / "benchmarks" / "results" / "federated.json"
    dest.parent.mkdir(parents=True, exist_ok=True)

    def config(name: str, mode: str, lr: float, run: str):
        return load_federated_config(str(REPO / "configs" / "federated" / PARTITIONS[name]), [
            f"data.manifests={manifest_list}", f"out_dir={out / name / mode / run}",
            "backbone.model=dermino_vit_tiny_14", f"backbone.overrides.depth={args.depth}",
            f"embed.image_size={args.image_size}", f"embed.pool={args.pool}", f"embed.cache_dir={out / 'cache'}",
            f"train.trainable={mode}", f"train.last_k={args.last_k}", f"train.lora_rank={args.lora_rank}",
            f"train.lr={lr}", f"train.local_epochs={args.local_epochs}", f"strategy.rounds={args.rounds}",
            f"strategy.name={args.strategy}", f"compare.n_resamples={args.resamples}", "progress=false",
            *([f"backbone.weights={args.weights}"] if args.weights else []),
        ])

    rows = []
    for mode in args.trainable:
        t = time.perf_counter()
        base = config(args.partitions[0], mode, PAPER_LR, "prep")
        preload_inputs(base, load_manifests(base.data.__class__(manifests=base.data.manifests), out))
        report.setdefault("frozen_part_seconds", {})[mode] = time.perf_counter() - t
        for name in args.partitions:
            entry = report["partitions"].setdefault(name, {}).setdefault(mode, {})
            lrs = [PAPER_LR] + [float(v) for v in getattr(args, f"lrs_{mode}").split(",") if v]
            sims = {}
            for lr in lrs:
                cfg = config(name, mode, lr, f"lr{lr:g}")
                t = time.perf_counter()
                history = simulate(cfg)
                sims[lr] = {"cfg": cfg, "history": history, "seconds": time.perf_counter() - t}
                entry.setdefault("selection", {})[f"{lr:g}"] = {
                    "val_loss": weighted_val_loss(history), "seconds_per_round": history["seconds_per_round"]}
                print(f"{name} {mode} lr={lr:g}: federated val loss {weighted_val_loss(history):.4f}, "
                      f"{time.perf_counter() - t:.1f}s", flush=True)
            tuned = min(lrs, key=lambda lr: weighted_val_loss(sims[lr]["history"]))
            for setting, lr in (("paper", PAPER_LR), ("tuned", tuned)):
                cfg, history = sims[lr]["cfg"], sims[lr]["history"]
                t = time.perf_counter()
                folder = Path(cfg.out_dir) / "compare"
                if setting == "paper" or lr != PAPER_LR:  # the paper's lr won the selection: same run, same table
                    compare(cfg)
                res = summary(folder)
                entry[setting] = {"lr": lr, "clients": history["clients"],
                                  "seconds_per_round": history["seconds_per_round"],
                                  "compare_seconds": time.perf_counter() - t, "results": res,
                                  "comparison_md": (folder / "comparison.md").read_text()}
                print(f"\n## {name} / {mode} / {setting} (lr {lr:g}; {cfg.data.column}: "
                      f"{', '.join(history['clients'].values())})\n\n{(folder / 'comparison.md').read_text()}", flush=True)
                rows.append((name, mode, setting, lr, history, res))
                dest.write_text(json.dumps(report, indent=2, default=float))
    report["total_seconds"] = time.perf_counter() - t_all
    dest.write_text(json.dumps(report, indent=2, default=float))
    table = markdown(rows)
    (dest.with_suffix(".md")).write_text(table)
    print("\n" + table + f"\nwrote {dest} ({report['total_seconds']:.0f}s)")


def _fmt(v: list | None) -> str:
    if not v or v[0] is None:
        return "n/a"
    lo, hi = v[1], v[2]
    return f"{v[0]:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None else f"{v[0]:.3f}"


def markdown(rows: list) -> str:
    """One line per partition x trainable x setting: union macro AUROC of federated, pooled, best and worst
    single site, and seconds per round."""
    lines = ["| partition | trainable | setting (lr) | federated | pooled | best local | worst local | s/round |",
             "|---|---|---|---|---|---|---|---|"]
    for name, mode, setting, lr, history, res in rows:
        union = res["union"]
        fed = next(v for k, v in union.items() if k.startswith("federated"))["auroc_macro"]
        local = {k: v["auroc_macro"] for k, v in union.items() if k.startswith("local-")}
        best = max(local, key=lambda k: local[k][0] if local[k][0] is not None else -1)
        worst = min(local, key=lambda k: local[k][0] if local[k][0] is not None else 2)
        secs = list(history["seconds_per_round"].values())
        lines.append(f"| {name} | {mode} | {setting} ({lr:g}) | {_fmt(fed)} | {_fmt(union['pooled']['auroc_macro'])} | "
                     f"{_fmt(local[best])} ({best[6:]}) | {_fmt(local[worst])} ({worst[6:]}) | "
                     f"{sum(secs) / len(secs):.2f} |")
    return "\n".join(lines) + "\n\nmacro AUROC on the union of the sites' test rows, 95% bootstrap CI.\n"


if __name__ == "__main__":
    main()
