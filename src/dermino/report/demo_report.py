"""The demo's report: every section filled from the files the demo run wrote.

It reads files only (``steps.json``, ``demo_config.yaml`` and what each step wrote), never the
``Demo`` object, so a report can be rebuilt from a finished (or copied) demo folder:
``build_demo_report("demo_output")``. Sources, per section: manifests and ``data info`` (data), ``knowledge/vocabulary.csv``
(vocabulary), each pretraining run's ``metrics.csv`` (loss curves), ``eval/results/*.json``
and ``eval/tables`` / ``eval/plots`` (classification, fairness, few-shot), the segmentation
results JSON and overlay PNGs, the retrieval grid, ``deploy/`` (classifier.json, zeroshot.json) and ``federated/compare``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from dermino.report.html import Figure, Section, format_metric, results_table, write_report  # noqa: E402
from dermino.report.monitor import monitor_section  # noqa: E402
from dermino.results import Metric, code_version, read_results  # noqa: E402

LOSS_TERMS = ("loss", "dino_global", "dino_local", "ibot", "koleo", "knowledge")


@dataclass
class DemoRun:
    """What a demo folder holds, read back from its files."""

    out: Path
    cfg: Any  # demo_config.yaml as attributes (cfg.data, cfg.depth, ...)
    steps: list[Any]  # steps.json entries as attributes (name, seconds, command, detail)
    pretrain_dirs: dict[str, Path] = field(default_factory=dict)
    backbones: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, out: str | Path) -> DemoRun:
        out = Path(out)
        steps_path, cfg_path = out / "steps.json", out / "demo_config.yaml"
        for p in (steps_path, cfg_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p} not found: is {out} the output folder of `dermino demo`?")
        steps = [SimpleNamespace(**s) for s in json.loads(steps_path.read_text())]
        cfg = SimpleNamespace(**(yaml.safe_load(cfg_path.read_text()) or {}))
        pretrain_dirs = {s.name.split(":", 1)[1].strip(): _inside(out, getattr(cfg, "out", None), s.detail["out"])
                         for s in steps if s.name.startswith("pretrain:") and "out" in s.detail}
        return cls(out, cfg, steps, pretrain_dirs, ["random-init", *pretrain_dirs])


def _inside(folder: Path, recorded_out: str | None, path: str) -> Path:
    """A path the demo recorded relative to the directory it ran in, re-rooted at ``folder`` so the
    report can be rebuilt from anywhere (and after the folder was moved)."""
    p = Path(path)
    if recorded_out and not p.is_absolute():
        try:
            return folder / p.relative_to(recorded_out)
        except ValueError:
            pass
    return p


def _data_section(demo: DemoRun) -> Section:
    rows = []
    for name, detail in (demo.steps[0].detail if demo.steps else {}).items():
        s = detail.get("summary", {})
        rows.append({
            "dataset": name,
            "images": detail.get("images"),
            # A column mixing counts and None would print as floats and "nan".
            "lesions": "—" if s.get("lesions") is None else str(s["lesions"]),
            "splits": ", ".join(f"{k} {v}" for k, v in s.get("by_split", {}).items()),
            "diagnoses": ", ".join(f"{k} {v}" for k, v in s.get("by_label", {}).items())
            + (f", unlabelled {s['unlabelled']}" if s.get("unlabelled") else ""),
            "sex": ", ".join(f"{k} {v}" for k, v in s.get("by_sex", {}).items()),
            "masks": s.get("with_mask"),
            "bad files": detail.get("bad_files"),
        })
    source = demo.cfg.data or "the bundled sample (src/dermino/sample_data: real HAM10000, PH2 and ISIC 2017 images)"
    return Section(
        "Data",
        paragraphs=[f"Images from {source}. HAM10000 is split by lesion (no lesion crosses splits); "
                    "ISIC 2017 keeps its official train/validation split (its test images are unlabelled "
                    "and used only for pretraining)."],
        tables=[("Images per dataset", pd.DataFrame(rows))],
    )


def _knowledge_section(demo: DemoRun) -> Section:
    path = demo.out / "knowledge" / "vocabulary.csv"
    if not path.is_file():
        return Section("Disease vocabulary", paragraphs=["(not built)"])
    vocab = pd.read_csv(path, dtype=str, keep_default_na=False)
    n_canonical = vocab["canonical"].nunique() if "canonical" in vocab else len(vocab)
    return Section(
        "Disease vocabulary (knowledge prototypes)",
        paragraphs=[f"{len(vocab)} disease names from all sources, merged into {n_canonical} canonical "
                    "classes; each class's prototype row of W is the text embedding of its name. The "
                    "mapping file is meant to be reviewed (and edited) by a clinician."],
        tables=[("name → canonical", vocab)],
    )


def _metrics(demo: DemoRun) -> dict[str, pd.DataFrame]:
    """Each pretraining run's metrics.csv, by run name (runs without one are left out)."""
    return {name: pd.read_csv(d / "metrics.csv") for name, d in demo.pretrain_dirs.items()
            if (d / "metrics.csv").is_file()}


def _loss_figure(demo: DemoRun, frames: dict[str, pd.DataFrame]) -> Path | None:
    """One panel of loss terms per run, plus one for the knowledge term against its class-prior
    level (on the shared axis it would be a flat line at the bottom)."""
    if not frames:
        return None
    with_knowledge = {n: df for n, df in frames.items() if "knowledge" in df and (df["knowledge"] != 0).any()}
    n_panels = len(frames) + bool(with_knowledge)
    fig, axes = plt.subplots(1, n_panels, figsize=(5.0 * n_panels, 3.4), squeeze=False)

    def steps(df: pd.DataFrame) -> pd.Series:
        return df["step"] if "step" in df else pd.Series(range(len(df)))

    for ax, (name, df) in zip(axes[0], frames.items(), strict=False):
        for col in LOSS_TERMS:
            if col in df and df[col].notna().any() and (df[col] != 0).any():
                ax.plot(steps(df), df[col], label=col, lw=1.4 if col == "loss" else 1.0)
        ax.set_title(f"pretraining: {name}")
    if with_knowledge:
        ax = axes[0][-1]
        for name, df in with_knowledge.items():
            line = ax.plot(steps(df), df["knowledge"], label=f"{name}: knowledge (training batches)", alpha=0.5)[0]
            floor = _knowledge_floor(demo.pretrain_dirs[name])
            if floor is not None:
                ax.axhline(floor, color=line.get_color(), ls="--", lw=0.8, label=f"{name}: class-prior level (train)")
            held = df.dropna(subset=["knowledge_heldout"]) if "knowledge_heldout" in df else df.iloc[0:0]
            if len(held):
                h = ax.plot(steps(held), held["knowledge_heldout"], "o-", lw=1.6, label=f"{name}: held-out knowledge")[0]
                ax.plot(steps(held), held["knowledge_heldout_prior"], ":", color=h.get_color(), lw=1.2,
                        label=f"{name}: held-out class-prior level")
        ax.set_title("knowledge term vs the class prior")
    for ax in axes[0]:
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = demo.out / "figures" / "pretrain_losses.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _knowledge_floor(run_dir: Path) -> float | None:
    path = run_dir / "knowledge.json"
    return json.loads(path.read_text()).get("class_prior_floor") if path.is_file() else None


def _pretrain_section(demo: DemoRun) -> Section:
    rows = []
    frames = _metrics(demo)
    for name, df in frames.items():
        d = demo.pretrain_dirs[name]
        # single logged steps are noisy: compare the means of the first and last few
        head, tail = df.head(3), df.tail(3)
        row: dict[str, object] = {"run": name, "logged steps": len(df)}
        for col in ("loss", "knowledge"):
            if col in df:
                switched_off = not (df[col] != 0).any()
                row[f"{col} (first → last)"] = "—" if switched_off else f"{head[col].mean():.3f} → {tail[col].mean():.3f}"
        floor = _knowledge_floor(d)
        row["knowledge: class-prior level"] = "—" if floor is None else f"{floor:.3f}"
        held = df.dropna(subset=["knowledge_heldout"]) if "knowledge_heldout" in df else df.iloc[0:0]
        for col in ("held-out knowledge (prior level)", "held-out head AUROC", "cos own / other prototype"):
            row[col] = "—"  # a run without the knowledge head (or without a held-out set)
        if len(held):
            last = held.iloc[-1]
            row["held-out knowledge (prior level)"] = (f"{last['knowledge_heldout']:.3f} "
                                                       f"({last['knowledge_heldout_prior']:.3f})")
            row["held-out head AUROC"] = f"{last['knowledge_heldout_auroc']:.3f}"
            row["cos own / other prototype"] = f"{last['knowledge_cos_own']:.3f} / {last['knowledge_cos_other']:.3f}"
        if "images_per_s" in df:
            row["images/s"] = f"{df['images_per_s'].tail(5).mean():.3g}"
        if "mfu" in df:
            row["MFU"] = f"{df['mfu'].tail(5).mean():.1%}"
        rows.append(row)
    fig = _loss_figure(demo, frames)
    c = demo.cfg
    return Section(
        "Pretraining",
        paragraphs=[f"ViT-Tiny/14 ({c.depth} blocks, width {c.embed_dim}) trained from scratch on CPU for "
                    f"{c.pretrain_images} images per run, crops {c.global_size}/{c.local_size} px "
                    f"(2 global + {c.n_local_crops} local). 'hybrid' uses DINO + iBOT + KoLeo + the knowledge "
                    "loss; 'ssl-only' drops the knowledge loss (the paper's ablation). Loss values are the means "
                    "of the first and of the last three logged steps. The class-prior level is what the knowledge "
                    "loss of an image-blind predictor (each class's frequency) would be: the knowledge term "
                    "carries information about the images only below it. The held-out columns score labelled "
                    "validation/test images the run never trained on (teacher features, the student's knowledge "
                    "head) against the class-prior level of those images: the knowledge head has learnt something "
                    "about images only if its held-out loss is below that level (docs/knowledge.md)."],
        tables=[("Runs", pd.DataFrame(rows))],
        figures=[Figure(fig, "Loss terms during pretraining")] if fig else [],
    )


def _classification_section(demo: DemoRun) -> Section:
    eval_dir = demo.out / "eval"
    summary = eval_dir / "tables" / "summary.csv"
    tables = []
    if summary.is_file():
        tables.append(("kNN (k=5, cosine) and linear probe; value [95 % bootstrap CI]", pd.read_csv(summary)))
    note = eval_dir / "tables" / "summary.md"
    paragraphs = ["Frozen-backbone features of the test images (HAM10000: held-out lesions; ISIC 2017: the "
                  "official validation images) classified by kNN and by a linear probe whose settings are "
                  "chosen on a validation split carved from train, never on test. Marks: paired bootstrap "
                  "against random initialisation (* p<0.05, ** p<0.01, *** p<0.001)."]
    if note.is_file():
        paragraphs.append("Tables as files: eval/tables/summary.{md,csv,html}; comparisons in eval/tables/comparisons.json.")
    figures = [Figure(p, p.stem.replace("_", " ")) for p in sorted((eval_dir / "plots").glob("bars_*.png"))]
    figures += [Figure(p, p.stem.replace("_", " ")) for p in sorted((eval_dir / "plots").glob("fewshot_*.png"))]
    return Section("Classification: kNN and linear probe", paragraphs=paragraphs, tables=tables, figures=figures)


def _fairness_section(demo: DemoRun) -> Section:
    results = [r for r in read_results(demo.out / "eval" / "results") if r.task.startswith("fairness")]
    rows = []
    for r in results:
        for attr, rep in r.extra.get("attributes", {}).items():
            for group, entry in rep["groups"].items():
                auroc = entry.get("auroc", {})
                rows.append({
                    "dataset": r.dataset, "backbone": r.backbone, "attribute": attr, "group": group,
                    "n": entry["n"],
                    "AUROC [CI]": format_metric(Metric(**auroc)) if auroc else "–",
                    "balanced acc [CI]": format_metric(Metric(**entry["balanced_accuracy"]))
                    if "balanced_accuracy" in entry else "–",
                })
            gap = rep.get("gap", {}).get("auroc", math.nan)
            rows.append({
                "dataset": r.dataset, "backbone": r.backbone, "attribute": attr, "group": "AUROC gap",
                "n": "", "AUROC [CI]": "–" if not math.isfinite(gap) else f"{gap:.3f}",
                "balanced acc [CI]": f"DP diff {rep['demographic_parity_difference']:.3f}, "
                                     f"EO diff {rep['equalized_odds_difference']:.3f}"
                if math.isfinite(rep["demographic_parity_difference"]) else "–",
            })
    figures = [Figure(p, p.stem.replace("_", " ")) for p in sorted((demo.out / "eval" / "plots").glob("fairness_*hybrid*.png"))]
    return Section(
        "Fairness by sex, age and estimated skin tone",
        paragraphs=["Linear-probe predictions broken down by group. Skin tone is estimated per image as the "
                    "Individual Typology Angle of non-lesion skin pixels (no image here has a Fitzpatrick label). "
                    "Gaps use only groups with enough images; small groups have wide intervals."],
        tables=[("Per-group metrics", pd.DataFrame(rows))],
        figures=figures[:4],
    )


def _segmentation_section(demo: DemoRun) -> Section:
    results = [r for r in read_results(demo.out / "eval" / "results") if r.task.startswith("segmentation")]
    table = results_table(results, ["dice", "jaccard", "dice_background", "dice_pooled"])
    figures = []
    for label in demo.backbones:
        seg_dir = demo.out / "segment" / label
        overlays = sorted(seg_dir.rglob("*overlay*.png"))[:4]
        figures += [Figure(p, f"{label}: {p.stem}") for p in overlays]
    return Section(
        "Lesion segmentation (PH2, frozen backbone, linear head)",
        paragraphs=["Headline: Dice and Jaccard of the lesion class, averaged over test images, with 95 % "
                    "bootstrap CIs over images. Background-class Dice is reported separately and named so."],
        tables=[("Segmentation", table)],
        figures=figures,
    )


def _retrieval_section(demo: DemoRun) -> Section:
    step = next((s for s in demo.steps if s.name.startswith("similar")), None)
    png = demo.out / "figures" / "retrieval.png"
    paragraphs = ["Each row: a held-out HAM10000 image and its five most similar training images by cosine "
                  "similarity of the backbone's features (green: same diagnosis)."]
    if step and "neighbour_label_agreement" in step.detail:
        paragraphs.append(f"Share of neighbours with the query's diagnosis in this grid: "
                          f"{step.detail['neighbour_label_agreement']:.2f} (backbone: {step.detail['backbone']}).")
    return Section("Similar cases", paragraphs=paragraphs, figures=[Figure(png, "similar-case retrieval")])


def _deploy_section(demo: DemoRun) -> Section | None:
    """The classifier a clinic would serve: calibrated test metrics, attention overlays, zero-shot."""
    step = next((s for s in demo.steps if s.name.startswith("deploy")), None)
    if step is None:
        return None  # a demo folder from before this step existed
    clf_dir = _inside(demo.out, getattr(demo.cfg, "out", None), step.detail["classifier"])
    info = json.loads((clf_dir / "classifier.json").read_text())
    cal = info["calibration"]
    rows = [{"metric": name, "value [95 % CI]": format_metric(Metric(**m)), "n": m.get("n")}
            for name, m in info["metrics"].items()]
    tables = [(f"Calibrated classifier on held-out HAM10000 lesions (backbone: {step.detail['backbone']})",
               pd.DataFrame(rows))]
    paragraphs = [
        "A linear head on the frozen hybrid backbone, with one temperature fitted on a validation split "
        f"carved from train by lesion (T = {cal['temperature']:.3f}); the test images score it. ECE is the "
        "expected calibration error of the top-1 probability, before and after temperature scaling. The "
        "same folder and the similar-case index built from it start the clinician service: "
        f"{step.detail['serve']}",
    ]
    figures = []
    if cal.get("diagram") and (clf_dir / cal["diagram"]).is_file():
        figures.append(Figure(clf_dir / cal["diagram"], "reliability before and after temperature scaling"))
    attention = demo.out / "figures" / "attention.png"
    if attention.is_file():
        figures.append(Figure(attention, "attention rollout on held-out images (one per diagnosis), with the "
                                         "classifier's calibrated top-1 suggestion"))
    if "zero_shot" in step.detail:
        zs = json.loads(_inside(demo.out, getattr(demo.cfg, "out", None), step.detail["zero_shot"]).read_text())
        tables.append((f"Zero-shot on {zs['dataset']} ({zs['n']} test images, classes named only in text)",
                       pd.DataFrame([
                           {"model": "hybrid backbone + knowledge head",
                            **{k: format_metric(Metric(**v)) for k, v in zs["trained"].items()}},
                           {"model": "same head at random init",
                            **{k: format_metric(Metric(**v)) for k, v in zs["random_init"].items()}},
                       ])))
        seen = ", ".join(zs["seen_in_training"]) or "none"
        paragraphs.append(
            "Zero-shot scores each image against the text embedding of every class name through the knowledge "
            f"head, with no training on these images or labels (class names that were also prototypes during "
            f"pretraining: {seen}). Chance AUROC is "
            f"0.5; paired bootstrap against the untrained head: p = {zs['p_value_vs_random']:.3g}.")
    return Section("Deployment: calibrated classifier, attention maps, zero-shot", paragraphs=paragraphs,
                   tables=tables, figures=figures)


def _federated_sections(demo: DemoRun) -> list[Section]:
    """The federated comparison's results files, rendered as ``dermino report`` renders them."""
    from dermino.report.federated import federated_sections

    step = next((s for s in demo.steps if s.name.startswith("federated")), None)
    if step is None:
        return []
    return federated_sections(read_results(_inside(demo.out, getattr(demo.cfg, "out", None), step.detail["out"])))


def _provenance_section(demo: DemoRun) -> Section:
    rows = [{"step": s.name, "seconds": f"{s.seconds:.1f}", "equivalent command": s.command[:300],
             "note": s.detail.get("note", "") if isinstance(s.detail, dict) else ""} for s in demo.steps]
    return Section(
        "How this report was made",
        paragraphs=[f"dermino {code_version()}. Configs: demo_config.yaml, eval_config.yaml, "
                    "pretrain/*/config.yaml. Every number above is read from the results files of this run."],
        tables=[("Steps", pd.DataFrame(rows))],
    )


def _leaderboard_sections(demo: DemoRun) -> list[Section]:
    """The leaderboard step's forest, fairness and calibration plots (read from its folder)."""
    folder = demo.out / "leaderboard"
    if not (folder / "leaderboard.json").is_file():
        return []
    from dermino.report.leaderboard import leaderboard_sections

    return leaderboard_sections(folder)


def build_demo_report(out: str | Path) -> tuple[Path, Path]:
    """(report.html, report.md) of the demo folder ``out``, from its files."""
    demo = DemoRun.load(getattr(out, "out", out))  # a Demo-like object is read through its folder too
    sections = [
        _data_section(demo),
        _knowledge_section(demo),
        _pretrain_section(demo),
        monitor_section(demo.pretrain_dirs),
        _classification_section(demo),
        _fairness_section(demo),
        *_leaderboard_sections(demo),
        _segmentation_section(demo),
        _retrieval_section(demo),
        _deploy_section(demo),
        *_federated_sections(demo),
        _provenance_section(demo),
    ]
    sections = [s for s in sections if s is not None]
    total = sum(s.seconds for s in demo.steps)
    return write_report(
        demo.out, "dermino demo: hybrid pretraining and evaluation on real dermoscopy images", sections,
        subtitle=f"Run of {total / 60:.1f} min on {demo.cfg.data or 'the bundled sample'}; small-sample numbers "
                 "that show the workflow end to end, not the paper's results.",
    )
