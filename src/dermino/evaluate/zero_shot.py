"""Zero-shot diagnosis from disease names through the trained knowledge head.

The knowledge head scores an image against text prototypes. Because the eq5 / siglip heads
map text into the image space with a *fixed* map, any disease name, including names never
seen in pretraining, becomes a prototype: embed it with the text encoder (and pooling) the run
used, map it, and score. No labels are used for fitting: every labelled row is a test row.

Reported per dataset: macro AUROC and F1 (softmax over the names' scores) with percentile
bootstrap CIs, against chance (AUROC 0.5) and against the same head design at random
initialisation (random-init backbone, initial head), with a paired bootstrap p-value.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dermino.data.disease_names import normalise_disease_name
from dermino.data.manifest import read_manifest, split_labels
from dermino.evaluate.embeddings import EmbedConfig, extract_embeddings
from dermino.evaluate.metrics import CLASSIFICATION_METRICS
from dermino.evaluate.stats import bootstrap_ci, paired_bootstrap
from dermino.results import Metric, Result, write_result

log = logging.getLogger(__name__)


@dataclass
class ZeroShotConfig:
    """Names to score and how. ``prompts`` maps a class label to the text scored for it
    (default: the label itself), e.g. {melanoma: malignant melanoma}."""

    head: str = ""  # knowledge_head.safetensors; "" = next to the backbone weights
    prompts: dict[str, str] = field(default_factory=dict)
    splits: list[str] = field(default_factory=list)  # manifest splits to score; [] = every labelled row
    encoder: str = ""  # "" = the encoder recorded in the head file
    pooling: str = ""  # "" = the pooling recorded in the head file


def head_path_for(weights: str | Path | None, head: str = "") -> Path:
    """The head file: ``head`` when given, else knowledge_head.safetensors beside ``weights``."""
    from dermino.losses.knowledge_heads import HEAD_FILE

    if head:
        return Path(head)
    if not weights:
        raise ValueError("zero-shot needs a knowledge head: pass --head, or backbone weights exported by "
                         "`dermino pretrain` (the head is written next to them)")
    return Path(weights).parent / HEAD_FILE


def labelled_rows(manifest: str | Path, splits: list[str], classes: list[str] | None = None
                  ) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Rows with a first label (in ``splits`` when given), integer labels and (normalised) class names."""
    df = read_manifest(manifest)
    root = df.attrs.get("root")
    # normalised ("BCC" -> "basal cell carcinoma"): the text encoder must see the disease, not an abbreviation
    first = np.array([normalise_disease_name((split_labels(v) or [""])[0])
                      for v in df.get("labels", pd.Series([""] * len(df)))])
    keep = first != ""
    if splits and "split" in df.columns:
        keep &= df["split"].isin(splits).to_numpy()
    names = classes or sorted({str(v) for v in first[keep]})
    keep &= np.isin(first, names)
    df = df[keep].reset_index(drop=True)
    df.attrs["root"] = root
    if len(df) == 0:
        raise ValueError(f"{manifest}: no labelled rows{' in splits ' + str(splits) if splits else ''}")
    y = np.array([names.index(v) for v in first[keep]])
    return df, y, names


@torch.no_grad()
def zero_shot_probs(features: np.ndarray, head: torch.nn.Module, text: np.ndarray) -> np.ndarray:
    """Softmax over the names of the head's scores of ``features`` (N, D) against ``text`` (K, E)."""
    protos = head.map_text(torch.from_numpy(np.asarray(text, dtype=np.float32)))
    scores = head.score(torch.from_numpy(np.asarray(features, dtype=np.float32)), protos)
    return torch.softmax(scores.double(), dim=1).numpy()


def _metrics(y: np.ndarray, probs: np.ndarray, bootstrap: int, seed: int) -> dict[str, Metric]:
    pred = probs.argmax(1)
    present = [int(k) for k in np.unique(y)]
    return {name: bootstrap_ci(lambda a, b, c, fn=fn: fn(a, b, c, present), y, probs, pred,
                               n_resamples=bootstrap, seed=seed)
            for name, fn in CLASSIFICATION_METRICS.items() if name in ("auroc", "f1")}


def run_zero_shot(
    backbone: str, weights: str | None, manifest: str, cfg: ZeroShotConfig, *, overrides: dict[str, Any] | None = None,
    embed: EmbedConfig | None = None, bootstrap: int = 1000, seed: int = 0, dataset: str = "",
    name: str = "", out_dir: str | Path | None = None, progress: bool = False,
) -> dict[str, Any]:
    """Zero-shot macro AUROC/F1 of a trained backbone + head vs random init; optionally writes
    ``zeroshot`` results JSON (one per backbone, the random-init baseline included)."""
    from dermino.evaluate.metrics import macro_auroc
    from dermino.knowledge.encoder import load_text_encoder
    from dermino.losses.knowledge_heads import load_head
    from dermino.models import create

    path = head_path_for(weights, cfg.head)
    head, info = load_head(path)
    head0, _ = load_head(path, initial=True, seed=seed)
    encoder_name = cfg.encoder or info.get("encoder") or ""
    if encoder_name in ("", "random"):
        raise ValueError(f"{path}: the head was trained on random prototypes (no text encoder); zero-shot needs "
                         "text prototypes")
    df, y, classes = labelled_rows(manifest, cfg.splits)
    texts = [cfg.prompts.get(c, c) for c in classes]
    encoder = load_text_encoder(encoder_name, pooling=cfg.pooling or info.get("pooling") or "mean")
    text = encoder.encode(texts)
    embed = embed or EmbedConfig()
    overrides = overrides or {}
    trained = create(backbone, weights=weights, **overrides)
    torch.manual_seed(seed)
    random_init = create(backbone, weights=None, **overrides)
    feats = extract_embeddings(trained, df, embed, weights=weights, model_name=name or "trained", progress=progress)
    feats0 = extract_embeddings(random_init, df, embed, model_name="random-init", progress=progress)
    probs = zero_shot_probs(feats.features, head, text)
    probs0 = zero_shot_probs(feats0.features, head0, text)
    m, m0 = _metrics(y, probs, bootstrap, seed), _metrics(y, probs0, bootstrap, seed)
    present = [int(k) for k in np.unique(y)]
    paired = paired_bootstrap(lambda a, b: macro_auroc(a, b, present), y, probs, probs0,
                              n_resamples=bootstrap, seed=seed)
    out = {
        "dataset": dataset or Path(manifest).stem, "classes": classes, "prompts": texts, "n": len(y),
        "encoder": encoder_name, "head": str(path), "head_kind": info.get("kind"),
        "seen_in_training": [c for c in texts if c in info.get("classes", [])],
        "trained": {k: asdict(v) for k, v in m.items()}, "random_init": {k: asdict(v) for k, v in m0.items()},
        "chance_auroc": 0.5, "auroc_diff_vs_random": asdict(paired.diff), "p_value_vs_random": paired.p_value,
    }
    if out_dir is not None:
        config = {"zero_shot": asdict(cfg), "embed": asdict(embed), "bootstrap": bootstrap, "seed": seed}
        for label, metrics in ((name or "trained", m), (f"{name or 'trained'}@init", m0)):
            write_result(Result(label, out["dataset"], "zeroshot", metrics, config=config,
                                extra={k: out[k] for k in ("classes", "prompts", "head_kind", "chance_auroc",
                                                           "auroc_diff_vs_random", "p_value_vs_random")}),
                         Path(out_dir))
    return out


def _parse_prompts(items: list[str]) -> dict[str, str]:
    prompts = {}
    for item in items:
        label, sep, text = item.partition("=")
        if not sep or not label.strip() or not text.strip():
            raise ValueError(f"--prompt expects LABEL=TEXT, got {item!r}")
        prompts[label.strip()] = text.strip()
    return prompts


def cmd_zero_shot(args: argparse.Namespace) -> int:
    import json

    cfg = ZeroShotConfig(head=args.head or "", prompts=_parse_prompts(args.prompt or []), splits=args.split or [],
                         encoder=args.encoder or "", pooling=args.pooling or "")
    overrides = json.loads(args.overrides) if args.overrides else {}
    embed = EmbedConfig(image_size=args.image_size, cache_dir=args.cache_dir)
    res = run_zero_shot(args.model, args.weights, args.manifest, cfg, overrides=overrides, embed=embed,
                        bootstrap=args.bootstrap, seed=args.seed, out_dir=args.out, progress=True)
    print(format_zero_shot(res))
    return 0


def format_zero_shot(res: dict[str, Any]) -> str:
    def ci(m: dict) -> str:
        lo, hi = m.get("ci_low"), m.get("ci_high")
        return f"{m['value']:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None else f"{m['value']:.3f}"

    d = res["auroc_diff_vs_random"]
    return "\n".join([
        f"zero-shot on {res['dataset']} ({res['n']} images; {res['head_kind']} head; names: {res['prompts']})",
        f"  macro AUROC  trained {ci(res['trained']['auroc'])}   random init {ci(res['random_init']['auroc'])}   "
        f"chance 0.500",
        f"  macro F1     trained {ci(res['trained']['f1'])}   random init {ci(res['random_init']['f1'])}",
        f"  AUROC trained - random init: {ci(d)} (paired bootstrap p = {res['p_value_vs_random']:.4f})",
    ])


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("zero-shot", help="diagnose from disease names through the trained knowledge head")
    p.add_argument("manifest", help="labelled manifest to score (e.g. PH2)")
    p.add_argument("--weights", required=True, help="teacher_backbone.pt exported by `dermino pretrain`")
    p.add_argument("--model", default="dermino_vit_tiny_14", help="registry name of the backbone")
    p.add_argument("--overrides", default="", help='architecture overrides as JSON, e.g. \'{"depth": 4}\'')
    p.add_argument("--head", default="", help="knowledge head file (default: next to --weights)")
    p.add_argument("--prompt", action="append", metavar="LABEL=TEXT",
                   help="text scored for a label (repeatable), e.g. 'melanoma=malignant melanoma'")
    p.add_argument("--split", action="append", help="only rows of this manifest split (repeatable)")
    p.add_argument("--encoder", default="", help="text encoder (default: the one recorded in the head file)")
    p.add_argument("--pooling", choices=["mean", "cls"], default=None, help="default: recorded in the head file")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--cache-dir", default="", help="embedding cache (default: $DERMINO_CACHE/embeddings)")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write results JSON here (e.g. runs/eval/results)")
    p.set_defaults(func=cmd_zero_shot)
