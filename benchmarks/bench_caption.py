"""Captioning evidence on CPU: random-init encoder vs a pretrained dermino encoder vs the LM alone.

On held-out PH2 + HAM10000 images (``--data``, the published layouts; nothing downloaded):

1. manifests of PH2 and HAM10000 split by lesion, captions written from their annotations
   (``--captions short``: one sentence with the diagnosis and, for PH2, the symmetry; ``full``:
   every PH2 criterion / all HAM10000 metadata);
2. a ViT-Tiny/14 (4 blocks, configs/pretrain/tiny_cpu.yaml) pretrained for ``--pretrain-budget``
   images on the HAM10000 train split (skipped with ``--encoder-weights``);
3. three captioners with SmolLM2-135M-Instruct + LoRA, trained for the same steps on the same
   pairs: random-init encoder, the pretrained encoder, and no image at all (LM alone);
4. BLEU-1/2/4, METEOR, ROUGE, CIDEr-D, diagnosis accuracy with 95 % bootstrap CIs on the test
   images; the grounding control (each image captioned again from a different-diagnosis image's
   features: paired difference with CI and p-value); with ``--vqa`` the PH2 criteria questions per
   criterion; time per training step and peak memory; a few example generations.

The recipe: balanced sampling by diagnosis (``--sampling``), an optional projector-only alignment
stage (``--align-steps``), the encoder's features cached once under ``OUT/feature_cache``.

Prints the tables, writes ``benchmarks/results/bench_caption.json`` and an HTML page
(``OUT/<recipe>/results/captioning.html``). Runs are kept under a folder named by the recipe
(every setting the numbers depend on, hashed): a rerun of the same recipe reuses finished ones, a
changed setting trains and evaluates anew beside them.

    nice -n 10 python benchmarks/bench_caption.py --out runs/bench_caption

Measured earlier (40 test images, 30 steps, no grounding control) on a 2-core CPU shared with other
jobs (load average ~20): about 32 min; after 30 steps all three captioners wrote the template's
wording but mostly one diagnosis: the image added nothing measurable at that budget. With 300 test
images and the grounding control, evaluation alone generates 600 captions per captioner (about
1 image/s greedy at batch 8 on this CPU, benchmarks/bench_caption_speed.py): budget hours.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dermino.caption.config import CaptionConfig
from dermino.caption.data import make_captions
from dermino.caption.evaluate import evaluate_run
from dermino.caption.lm import load_lm
from dermino.caption.model import CaptionerSpec
from dermino.caption.train import train_captioner
from dermino.config import apply_overrides, load_config
from dermino.data.adapters import build
from dermino.data.manifest import write_manifest
from dermino.data.splits import assign_splits
from dermino.pretrain import PretrainConfig, pretrain
from dermino.report.captioning import render_captioning_html
from dermino.results import read_result, result_filename

REPO = Path(__file__).resolve().parents[1]
ARCH = {"depth": 4, "layerscale_init": 0.1}


def _subset(df: pd.DataFrame, split: str, n: int, seed: int) -> pd.DataFrame:
    part = df[df["split"] == split]
    if len(part) > n:
        part = part.sample(n=n, random_state=seed)
    return part


def make_manifests(data: Path, out: Path, n_train: int, n_test: int, captions: str, seed: int) -> list[Path]:
    """PH2 and HAM10000 manifests holding only the chosen train/test rows, captions filled."""
    paths = []
    for name in ("ph2", "ham10000"):
        df = assign_splits(build(name, data / name), test_fraction=0.5, val_fraction=0.0,
                           group_col="lesion_id", seed=seed)
        df, _ = make_captions(df, seed=seed, short=captions == "short")
        keep = pd.concat([_subset(df, "train", n_train // 2, seed), _subset(df, "test", n_test // 2, seed)])
        keep.attrs = dict(df.attrs)
        paths.append(write_manifest(keep, out / f"{name}.csv"))
        if name == "ham10000":
            full = df.copy()
            full.attrs = dict(df.attrs)
            paths.append(write_manifest(full[full["split"] == "train"], out / "ham10000_train_all.csv"))
    return paths


def pretrain_encoder(manifest: Path, out: Path, budget: int) -> tuple[str, dict]:
    cfg = load_config(PretrainConfig, REPO / "configs" / "pretrain" / "tiny_cpu.yaml")
    apply_overrides(cfg, [f"data.manifests=[{manifest}]", "data.splits=[train]", f"schedule.budget_images={budget}",
                          f"run.out_dir={out}", "run.checkpoint_every=100000", "run.progress=false"])
    weights = out / "export" / "teacher_backbone.pt"
    stamp = out / "timing.json"
    if not (weights.is_file() and stamp.is_file()):
        t = time.perf_counter()
        pretrain(cfg)
        stamp.write_text(json.dumps({"seconds": time.perf_counter() - t, "budget_images": budget}))
    return str(weights), json.loads(stamp.read_text())


def recipe_tag(args: argparse.Namespace) -> str:
    """A folder name that changes with every setting a captioner's numbers depend on."""
    import hashlib

    blob = json.dumps({k: v for k, v in sorted(vars(args).items()) if k not in ("out", "data", "threads")},
                      default=str)
    return (f"{args.image_tokens}-g{args.patch_grid}-{args.steps}steps-align{args.align_steps}-{args.sampling}"
            f"-{hashlib.sha256(blob.encode()).hexdigest()[:8]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--out", default="runs/bench_caption")
    ap.add_argument("--n-train", type=int, default=120, help="train pairs (half PH2, half HAM10000)")
    ap.add_argument("--n-test", type=int, default=300, help="held-out test images (half each)")
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps per captioner (30 x 8 = 2 epochs of 120)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--captions", choices=["short", "full"], default="short")
    ap.add_argument("--max-new-tokens", type=int, default=20)
    ap.add_argument("--projector-lr", type=float, default=2e-3, help="paper: 4e-4 over full epochs")
    ap.add_argument("--lora-lr", type=float, default=1e-3, help="paper: 8e-5 over full epochs")
    ap.add_argument("--encoder-weights", help="reuse a pretrained dermino encoder instead of pretraining one")
    ap.add_argument("--pretrain-budget", type=int, default=400, help="images seen by the tiny pretraining run")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--align-steps", type=int, default=0,
                    help="projector-only alignment steps before the LoRA stage (LLaVA-style)")
    ap.add_argument("--sampling", choices=["uniform", "balanced"], default="balanced",
                    help="balanced: each diagnosis equally likely per draw")
    ap.add_argument("--vqa", action="store_true", help="also train and evaluate the PH2 criteria questions")
    ap.add_argument("--patch-grid", type=int, default=2, help="image tokens from patches: grid x grid pooled cells")
    ap.add_argument("--image-tokens", choices=["cls", "patch", "cls+patch"], default="cls+patch")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    ph2_m, ham_m, ham_all = make_manifests(Path(args.data), out / "manifests", args.n_train, args.n_test,
                                           args.captions, args.seed)
    timings["data"] = time.perf_counter() - t

    pre_info: dict = {}
    if args.encoder_weights:
        pretrained = args.encoder_weights
    else:
        pretrained, pre_info = pretrain_encoder(ham_all, out / f"pretrain-{args.pretrain_budget}", args.pretrain_budget)
        timings["pretrain"] = pre_info["seconds"]

    t = time.perf_counter()
    lm, tok = load_lm()
    timings["load_lm"] = time.perf_counter() - t
    encoder_kw = {"encoder": "dermino_vit_tiny_14", "encoder_overrides": dict(ARCH), "patch_grid": args.patch_grid,
                  "image_tokens": args.image_tokens, "prompt": "Dermoscopy report:", "lora_r": 8}
    conditions = {
        "random-init-encoder": (CaptionerSpec(**encoder_kw), None),
        "dermino-encoder": (CaptionerSpec(**encoder_kw), pretrained),
        "lm-alone": (CaptionerSpec(**{**encoder_kw, "image_tokens": "none"}), None),
    }
    recipe = recipe_tag(args)  # runs of another recipe live beside, never reused for this one
    results_dir = out / recipe / "results"
    summary: dict[str, dict] = {}
    for name, (spec, weights) in conditions.items():
        run = out / recipe / name
        cfg = CaptionConfig(
            manifests=[str(ph2_m), str(ham_m)], model=spec, encoder_weights=weights, image_size=args.image_size,
            out=str(run), max_steps=args.steps, batch_size=args.batch_size, projector_lr=args.projector_lr,
            lora_lr=args.lora_lr, warmup_steps=max(1, args.steps // 10), max_caption_tokens=96,
            max_new_tokens=args.max_new_tokens, bootstrap=args.bootstrap, device="cpu", precision="fp32",
            seed=args.seed, log_every=1, progress=False, align_steps=args.align_steps, sampling=args.sampling,
            feature_cache=str(out / "feature_cache"), vqa_training=args.vqa,
        )
        result_path = results_dir / f"{name}__ph2+ham10000-test__captioning.json"
        if not result_path.is_file():
            t = time.perf_counter()
            torch.manual_seed(args.seed)
            meta_path = run / "captioner.json"
            done = meta_path.is_file() and json.loads(meta_path.read_text()).get("steps") == args.steps + (
                args.align_steps if spec.image_tokens != "none" else 0)
            if done:  # trained by an earlier, interrupted call: keep it
                log_df = pd.read_csv(run / "train_log.csv")
                meta = json.loads(meta_path.read_text())
                tr = argparse.Namespace(first_loss=float(log_df["loss"].iloc[0]), last_loss=float(log_df["loss"].iloc[-1]),
                                        steps=args.steps, seconds_per_step=meta["seconds_per_step"],
                                        peak_memory_mb=meta["peak_memory_mb"], n_train=None,
                                        seconds=float(log_df["seconds"].sum()))
            else:
                tr = train_captioner(cfg, lm=copy.deepcopy(lm), tokenizer=tok)
            train_s = tr.seconds if done else time.perf_counter() - t  # reused run: its logged step times
            t = time.perf_counter()
            res = evaluate_run(run, out_dir=results_dir, name=name, lm=copy.deepcopy(lm), tokenizer=tok,
                               vqa=args.vqa)
            # one name for the dataset across conditions
            res_path = results_dir / result_filename(res.backbone, res.dataset, res.task)
            data = json.loads(res_path.read_text())
            data["dataset"] = "ph2+ham10000-test"
            data["extra"]["train"] = {"seconds": train_s, "loss_first": tr.first_loss, "loss_last": tr.last_loss,
                                      "steps": tr.steps, "seconds_per_step": tr.seconds_per_step,
                                      "peak_memory_mb": tr.peak_memory_mb, "n_train": tr.n_train}
            data["extra"]["eval_seconds"] = time.perf_counter() - t
            result_path.write_text(json.dumps(data, indent=2))
            if res_path != result_path:
                res_path.unlink()
        res = read_result(result_path)
        summary[name] = {"metrics": {k: vars(v) for k, v in res.metrics.items()}, "train": res.extra["train"],
                         "meteor_skipped": res.extra.get("meteor_skipped"), "by_source": res.extra.get("by_source"),
                         "grounding": {k: v for k, v in (res.extra.get("grounding") or {}).items() if k != "partners"},
                         "vqa": {k: v for k, v in (res.extra.get("vqa") or {}).items() if k != "examples"}}
        print(f"{name}: done ({res.extra['train']['seconds_per_step']:.2f} s/step)", flush=True)

    cols = ["bleu1", "bleu4", "meteor", "rougeL_coco", "cider", "diagnosis_accuracy"]
    rows = []
    for name, s in summary.items():
        row = {"captioner": name}
        for c in cols:
            m = s["metrics"].get(c)
            row[c] = "skipped" if m is None else f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
        tr = s["train"]
        row["loss"] = f"{tr['loss_first']:.2f}->{tr['loss_last']:.2f}"
        row["s/step"] = f"{tr['seconds_per_step']:.2f}"
        row["peak MB"] = f"{tr['peak_memory_mb']:.0f}"
        rows.append(row)
    print(pd.DataFrame(rows).to_string(index=False))
    for name, s in summary.items():
        g = (s.get("grounding") or {}).get("diagnosis_accuracy")
        if g:
            print(f"{name}: grounding control, diagnosis accuracy {g['true_image']:.3f} (true image) vs "
                  f"{g['swapped_image']:.3f} (swapped), difference {g['diff']:+.3f} "
                  f"[{g['ci_low']:+.3f}, {g['ci_high']:+.3f}] p={g['p_value']:.3g}")
    examples = {}
    for name in conditions:
        pred = results_dir / read_result(results_dir / f"{name}__ph2+ham10000-test__captioning.json").extra["predictions"]
        df = pd.read_csv(pred, dtype=str, keep_default_na=False)
        pick = np.r_[0:2, len(df) - 2 : len(df)]
        examples[name] = df.iloc[pick][["image", "reference", "generated"]].to_dict("records")
        print(f"\n{name}:")
        for e in examples[name]:
            print(f"  {Path(e['image']).name}\n    true: {e['reference']}\n    gen:  {e['generated']}")
    html = render_captioning_html(results_dir)
    dest = REPO / "benchmarks" / "results" / "bench_caption.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps({"args": vars(args), "recipe": recipe, "pretrain": pre_info, "timings_s": timings,
                                "summary": summary, "examples": examples, "torch_threads": torch.get_num_threads()},
                               indent=2, default=str))
    print(f"\nwrote {dest} and {html}")


if __name__ == "__main__":
    main()
