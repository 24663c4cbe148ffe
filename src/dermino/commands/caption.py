"""``dermino caption make-captions|pairs|train|evaluate|generate|ask``: image captioning and criteria questions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dermino.config import load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "caption", help="image captioning: frozen encoder -> projector -> causal LM with LoRA",
        description="Write captions from annotations, train a captioner, score it, caption new images.",
    )
    sub = p.add_subparsers(dest="caption_command", metavar="ACTION")
    sub.required = True

    m = sub.add_parser("make-captions", help="fill a manifest's caption column from PH2 / HAM10000 annotations")
    m.add_argument("manifest", type=Path)
    m.add_argument("--out", type=Path, help="manifest to write (default: overwrite the input)")
    m.add_argument("--seed", type=int, default=0, help="template choice seed")
    m.add_argument("--overwrite", action="store_true", help="replace captions that are already there")
    m.add_argument("--short", action="store_true", help="one sentence (diagnosis, symmetry) instead of every criterion")
    m.set_defaults(func=_make_captions)

    q = sub.add_parser("pairs", help="a manifest from a CSV of (image, caption[, disease]) pairs, e.g. SkinCAP")
    q.add_argument("csv", type=Path)
    q.add_argument("--out", required=True, type=Path, help="manifest to write")
    q.add_argument("--root", type=Path, help="folder the image paths are relative to (default: the CSV's)")
    q.add_argument("--image-col")
    q.add_argument("--caption-col")
    q.add_argument("--label-col")
    q.add_argument("--split-seed", type=int, default=0)
    q.add_argument("--test-fraction", type=float, default=0.2)
    q.set_defaults(func=_pairs)

    t = sub.add_parser("train", help="train projector + LoRA on a manifest's captions, then evaluate on its test split")
    t.add_argument("--config", help="configs/caption/*.yaml (defaults: the paper's settings)")
    t.add_argument("--manifest", action="append", help="manifest with captions (repeatable)")
    t.add_argument("--encoder", help="registry name, e.g. dermino_vit_small_14")
    t.add_argument("--weights", help="local encoder checkpoint (default: random init)")
    t.add_argument("--lm", help="smollm2-135m-instruct, a local folder / .gguf, or a Hub id")
    t.add_argument("--out", help="run directory")
    t.add_argument("--no-evaluate", action="store_true")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. epochs=1 model.projector=linear")
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="BLEU/METEOR/ROUGE/CIDEr + clinical correctness with bootstrap CIs")
    e.add_argument("--run", required=True)
    e.add_argument("--manifest", action="append", help="default: the run's manifests")
    e.add_argument("--split", help="default: the run's test split")
    e.add_argument("--out", help="results folder (default: RUN/results)")
    e.add_argument("--num-beams", type=int)
    e.add_argument("--max-new-tokens", type=int)
    e.add_argument("--bootstrap", type=int)
    e.add_argument("--device", default="cpu")
    e.add_argument("--no-grounding", dest="grounding", action="store_false", default=None,
                   help="skip the grounding control (captions from a different-diagnosis image's features)")
    e.add_argument("--vqa", dest="vqa", action="store_true", default=None,
                   help="also ask the PH2 criteria questions (default: when the run was trained on them)")
    e.set_defaults(func=_evaluate)

    g = sub.add_parser("generate", help="caption image files or folders")
    g.add_argument("--run", required=True)
    g.add_argument("--images", nargs="+", required=True)
    g.add_argument("--out", type=Path, help="CSV of image,caption (default: print)")
    g.add_argument("--num-beams", type=int, default=1)
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--device", default="cpu")
    g.set_defaults(func=_generate)

    a = sub.add_parser("ask", help="ask a trained captioner a question about one image, e.g. "
                                   "\"Is there a blue-whitish veil?\" (train with vqa_training=true)")
    a.add_argument("image", type=Path)
    a.add_argument("question")
    a.add_argument("--run", required=True)
    a.add_argument("--max-new-tokens", type=int, default=24)
    a.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    a.add_argument("--device", default="cpu")
    a.set_defaults(func=_ask)


def _make_captions(args: argparse.Namespace) -> int:
    from dermino.caption.data import make_captions
    from dermino.data.manifest import read_manifest, write_manifest

    df = read_manifest(args.manifest)
    out, stats = make_captions(df, seed=args.seed, overwrite=args.overwrite, short=args.short)
    path = write_manifest(out, args.out or args.manifest)
    print(f"{path}: {stats.written} captions written, {stats.kept} kept, "
          f"{stats.no_annotation} rows without annotations to caption (left empty, skipped in training)")
    return 0


def _pairs(args: argparse.Namespace) -> int:
    from dermino.caption.data import read_pairs_csv
    from dermino.data.manifest import write_manifest
    from dermino.data.splits import assign_splits

    df = read_pairs_csv(args.csv, root=args.root, image_col=args.image_col, caption_col=args.caption_col,
                        label_col=args.label_col)
    df = assign_splits(df, test_fraction=args.test_fraction, group_col="lesion_id", seed=args.split_seed,
                       stratify_col=None)
    path = write_manifest(df, args.out)
    empty = int((df["caption"].str.strip() == "").sum())
    print(f"{path}: {len(df)} pairs ({empty} with an empty caption), splits {df['split'].value_counts().to_dict()}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from dermino.caption.config import CaptionConfig
    from dermino.caption.evaluate import evaluate_run
    from dermino.caption.train import train_captioner

    flags = {"manifests": [str(m) for m in args.manifest] if args.manifest else None,
             "model.encoder": args.encoder, "model.lm": args.lm,
             "encoder_weights": args.weights, "out": args.out}
    cfg = load_config(CaptionConfig, args.config, args.overrides, flags=flags)
    summary = train_captioner(cfg)
    print(f"run: {summary.run}  steps {summary.steps}  loss {summary.first_loss:.3f} -> {summary.last_loss:.3f}  "
          f"{summary.seconds_per_step:.2f} s/step  peak memory {summary.peak_memory_mb:.0f} MB  "
          f"({summary.skipped} images without caption skipped)")
    if not args.no_evaluate:
        _print(evaluate_run(summary.run, device=cfg.device if cfg.device != "auto" else "cpu"))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from dermino.caption.evaluate import evaluate_run

    _print(evaluate_run(args.run, manifests=args.manifest, split=args.split, out_dir=args.out,
                        num_beams=args.num_beams, max_new_tokens=args.max_new_tokens,
                        n_bootstrap=args.bootstrap, device=args.device, grounding=args.grounding,
                        vqa=args.vqa))
    return 0


def _generate(args: argparse.Namespace) -> int:
    import json

    from dermino.caption.generate import caption_images
    from dermino.caption.model import load_captioner

    cap = load_captioner(args.run, device=args.device)
    meta = json.loads((Path(args.run) / "captioner.json").read_text())
    pairs = caption_images(cap, args.images, int(meta.get("image_size", 224)), out_csv=args.out,
                           max_new_tokens=args.max_new_tokens, num_beams=args.num_beams)
    if args.out:
        print(f"{len(pairs)} captions -> {args.out}")
    else:
        for path, text in pairs:
            print(f"{path}\t{text}")
    return 0


def _ask(args: argparse.Namespace) -> int:
    import json

    from dermino.caption.generate import encode_paths, expand_images
    from dermino.caption.model import load_captioner
    from dermino.caption.vqa import parse_answer

    question = args.question.strip()
    if not question:
        raise ValueError("the question is empty")
    paths = expand_images([args.image])
    if len(paths) != 1:
        raise ValueError(f"{args.image}: give one image file, not a folder of {len(paths)}")
    cap = load_captioner(args.run, device=args.device)
    meta = json.loads((Path(args.run) / "captioner.json").read_text())
    if not meta.get("config", {}).get("vqa_training"):
        print("note: this captioner was not trained on questions (vqa_training=false); its answer may not "
              "be one", file=sys.stderr)
    feats = encode_paths(cap, paths, int(meta.get("image_size", 224)), progress=False)
    answer = cap.generate(feats if cap.uses_image else None, batch=1, max_new_tokens=args.max_new_tokens,
                          prompts=[question])[0]
    parsed = parse_answer(answer)
    if args.json:
        print(json.dumps({"image": str(paths[0]), "question": question, "answer": answer, "parsed": parsed}))
    else:
        print(f"{answer}\n[read as: {parsed}]")
    return 0


def _print(result) -> None:
    print(f"{result.backbone} on {result.dataset}:")
    for name, m in result.metrics.items():
        ci = f" [{m.ci_low:.3f}, {m.ci_high:.3f}]" if m.ci_low is not None and m.ci_high is not None else ""
        print(f"  {name:24s} {m.value:.3f}{ci}")
    if result.extra.get("meteor_skipped"):
        print(f"  meteor: {result.extra['notes'].get('meteor')}")
    g = result.extra.get("grounding") or {}
    if "skipped" in g:
        print(f"  grounding control skipped: {g['skipped']}")
    v = (result.extra.get("vqa") or {}).get("paired_mean_balanced_accuracy")
    if v:
        print(f"  criteria questions: mean balanced accuracy {v['true_image']:.3f} (true image) vs "
              f"{v['swapped_image']:.3f} (swapped), difference {v['diff']:+.3f} p={v['p_value']:.3g}")
    for key in ("diagnosis_accuracy", "criteria_f1"):
        if key in g:
            c = g[key]
            ci = f" [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]" if c["ci_low"] is not None else ""
            print(f"  grounding {key}: true image {c['true_image']:.3f} vs swapped image {c['swapped_image']:.3f}, "
                  f"difference {c['diff']:+.3f}{ci} p={c['p_value']:.3g}")
