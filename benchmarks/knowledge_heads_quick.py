"""Quick choice of the knowledge-head parametrisation: a short hybrid run per head, held-out diagnostics.

Same data and network as benchmarks/evidence_knowledge.py (ViT-Tiny/14, 4 blocks, 56/28 px crops,
HAM10000 train lesions + ISIC 2017 train/unlabelled test; held-out: HAM10000 val+test, ISIC 2017
val, 1,000 images), ``--budget`` images per head. Prints, per head, the held-out knowledge loss
against the class-prior level, the head's AUROC and the prototype cosines every
``--heldout-every`` steps; writes benchmarks/results/knowledge_heads_quick.json. Resumable.

    python benchmarks/knowledge_heads_quick.py --data ../shared/data --budget 3200 --heads projection,eq5,siglip
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
from _common import (
    RESULTS,
    add_data_argument,
    published_manifests,
    require_data,
    setup_logging,
    tiny_cpu_config,
    write_json,
)

from dermino.pretrain import pretrain
from dermino.pretrain.knowledge_monitor import COLUMNS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_argument(ap)
    ap.add_argument("--out", default="runs/knowledge_heads_quick")
    ap.add_argument("--budget", type=int, default=3200)
    ap.add_argument("--heads", default="projection,eq5,siglip")
    ap.add_argument("--heldout-every", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    data = require_data(ap, args)
    setup_logging()
    out = Path(args.out)
    m = published_manifests(data, out)
    both = f"[{m['ham10000']},{m['isic2017']}]"
    results = {}
    for head in [h for h in args.heads.split(",") if h]:
        run_dir = out / head
        cfg = tiny_cpu_config([
            f"data.manifests={both}", "crops.global_size=56", "crops.local_size=28", "crops.n_local=2",
            "model.heads.out_dim=1024", "schedule.batch_size=32", f"schedule.budget_images={args.budget}",
            f"losses.knowledge.head={head}", f"losses.knowledge.heldout={both}",
            f"losses.knowledge.heldout_every={args.heldout_every}", "losses.knowledge.heldout_max_images=1000",
            f"run.out_dir={run_dir}", "run.checkpoint_every=25", "run.progress=false", "run.log_every=10",
            f"run.threads={args.threads}",
        ])
        t = time.perf_counter()
        if not (run_dir / "export" / "teacher_backbone.pt").is_file():
            pretrain(cfg, resume=True)
        metrics = pd.read_csv(run_dir / "metrics.csv").dropna(subset=["knowledge_heldout"])
        results[head] = {"seconds": time.perf_counter() - t,
                         "curve": metrics[["step", *COLUMNS]].to_dict(orient="list")}
        print(head)
        print(metrics[["step", "knowledge", *COLUMNS]].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    dest = write_json({"budget_images": args.budget, "heads": results}, RESULTS / "knowledge_heads_quick.json")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
