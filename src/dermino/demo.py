"""``dermino demo``: the whole DermINO workflow on real dermoscopy images, on a CPU, in minutes.

data → knowledge vocabulary → hybrid pretraining (and the SSL-only ablation) → kNN / linear
evaluation with bootstrap CIs against random initialisation → fairness by sex and estimated
skin tone → frozen-backbone lesion segmentation → a calibrated classifier with its similar-case
index, attention maps and zero-shot scores → federated fine-tuning across sites → one
self-contained HTML report.

Every step calls the same public functions as the CLI commands, and the demo prints the
equivalent command for each, so a user can re-run any step on their own data. The numbers
come from a few hundred images and a few minutes of CPU training: they show the machinery
end to end, not the paper's results.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermino.config import load_config, save_config, to_dict
from dermino.files import write_text_atomic

log = logging.getLogger(__name__)

#: the architecture every demo backbone shares (random init, SSL-only and hybrid differ only in training)
DEMO_ARCH = "dermino_vit_tiny_14"


@dataclass
class DemoConfig:
    out: str = "demo_output"
    data: str = ""  # '' = the bundled sample; else a folder holding ham10000/, ph2/, isic2017/ as published
    seed: int = 0
    # configs/pretrain/tiny_cpu.yaml's network: 12-25 images/s on 2 CPU cores, by machine
    depth: int = 4
    embed_dim: int = 192
    num_heads: int = 3
    global_size: int = 98  # pretraining global crop (multiple of 14)
    local_size: int = 42
    n_local_crops: int = 4
    batch_size: int = 32
    pretrain_images: int = 1200  # per pretraining run (hybrid and SSL-only each): ~2 min each at 10 images/s
    prototypes: int = 4096
    eval_size: int = 98  # evaluation / segmentation input side (= the trained grid)
    bootstrap: int = 500
    seg_epochs: int = 20
    seg_max_images: int = 0  # 0 = all images with masks
    fewshot: bool = False  # few-shot by k (dermino evaluate protocol fewshot): off to fit the 15-minute budget
    retrieval_queries: int = 6
    ablation: bool = True  # also pretrain without the knowledge loss
    federated: bool = True  # FedAvg across HAM10000's dx_type groups (simulated in this process)
    federated_lr: float = 2e-3
    # a small leaderboard (preset dermino-paper: kNN, linear, fairness, calibration) of the demo's
    # backbones and one library baseline (timm ResNet-18, random init) at the demo's input size
    leaderboard: bool = True


@dataclass
class StepLog:
    name: str
    seconds: float
    command: str
    detail: dict[str, Any] = field(default_factory=dict)


class Demo:
    """Runs the steps in order, timing each and remembering what the report needs."""

    def __init__(self, cfg: DemoConfig):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.steps: list[StepLog] = []
        self.manifests: dict[str, Path] = {}
        self.backbones: dict[str, str | None] = {}  # label -> exported weights (None = random init)
        self.pretrain_dirs: dict[str, Path] = {}

    # ---------------------------------------------------------------- plumbing
    def _step(self, name: str, command: str, fn: Callable[[], dict[str, Any] | None]) -> None:
        print(f"\n==> [{len(self.steps) + 1}] {name}\n    equivalent: {command}", flush=True)
        start = time.perf_counter()
        detail = fn() or {}
        seconds = time.perf_counter() - start
        self.steps.append(StepLog(name, seconds, command, detail))
        print(f"    done in {seconds:.1f} s", flush=True)
        write_text_atomic(self.out / "steps.json", json.dumps([s.__dict__ for s in self.steps], indent=2, default=str))

    def arch_overrides(self) -> dict[str, Any]:
        c = self.cfg
        # layerscale as in pretraining: random init is the same architecture and init scheme
        return {"depth": c.depth, "embed_dim": c.embed_dim, "num_heads": c.num_heads, "layerscale_init": 0.1}

    # ---------------------------------------------------------------- steps
    def prepare_data(self) -> dict[str, Any]:
        from dermino.data.check import check_images
        from dermino.data.info import summarize
        from dermino.data.manifest import read_manifest

        mdir = self.out / "manifests"
        if self.cfg.data:
            self.manifests = prepare_published(Path(self.cfg.data), mdir, self.cfg.seed)
        else:
            from dermino.data.sample import sample_manifests

            self.manifests = sample_manifests(mdir, seed=self.cfg.seed)
        counts, bad_total = {}, 0
        for name, path in self.manifests.items():
            df = read_manifest(path)
            bad = check_images(df, workers=2)
            bad_total += len(bad)
            for b in bad:
                print(f"    bad file: {b}")
            summary = summarize(df)
            counts[name] = {"images": len(df), "summary": summary, "bad_files": len(bad)}
        if bad_total:
            print(f"    {bad_total} bad files found (listed above); training skips and logs them")
        return counts

    def build_knowledge(self) -> dict[str, Any]:
        from dermino.cli import main as cli

        kdir = self.out / "knowledge"
        code = cli(["knowledge", "build", *map(str, self.manifests.values()), "--out", str(kdir)])
        if code:
            raise RuntimeError(f"knowledge build failed with exit code {code}")
        vocab = pd.read_csv(kdir / "vocabulary.csv", dtype=str, keep_default_na=False)
        return {"vocabulary": str(kdir / "vocabulary.csv"), "names": len(vocab)}

    def pretrain_overrides(self, run: str, knowledge: bool) -> list[str]:
        c = self.cfg
        train_manifests = [str(self.manifests["ham10000"]), str(self.manifests["isic2017"])]
        return [
            f"model.arch={DEMO_ARCH}",
            f"model.depth={c.depth}",
            f"model.embed_dim={c.embed_dim}",
            f"model.num_heads={c.num_heads}",
            "model.drop_path_rate=0.1",
            "model.layerscale_init=0.1",
            f"model.heads.out_dim={c.prototypes}",
            "model.heads.hidden_dim=512",
            "model.heads.bottleneck_dim=128",
            f"data.manifests=[{','.join(train_manifests)}]",
            f"crops.global_size={c.global_size}",
            f"crops.local_size={c.local_size}",
            f"crops.n_local={c.n_local_crops}",
            f"losses.knowledge.enabled={str(knowledge).lower()}",
            f"losses.knowledge.prototypes={self.out / 'knowledge' / 'prototypes.safetensors'}",
            f"losses.knowledge.vocabulary={self.out / 'knowledge' / 'vocabulary.csv'}",
            # held-out knowledge diagnostics (labelled val/test rows, never trained on)
            f"losses.knowledge.heldout=[{','.join(train_manifests)}]",
            f"losses.knowledge.heldout_every={max(1, c.pretrain_images // c.batch_size // 4)}",
            "losses.knowledge.heldout_max_images=500",
            "losses.dino.warmup_teacher_temp_epochs=2",
            "optim.warmup_epochs=1",
            "optim.freeze_last_layer_epochs=0.5",
            "optim.base_lr=5e-3",
            "optim.momentum_teacher=0.99",
            f"schedule.batch_size={c.batch_size}",
            f"schedule.budget_images={c.pretrain_images}",
            f"run.out_dir={self.out / 'pretrain' / run}",
            f"run.seed={c.seed}",
            "run.device=cpu",
            "run.precision=fp32",
            f"run.checkpoint_every={max(1, c.pretrain_images // c.batch_size // 2)}",
            "run.log_every=5",
        ]

    def pretrain(self, run: str, knowledge: bool) -> dict[str, Any]:
        """Train ``run``; a rerun of the demo reuses a finished run whose config and input files are
        unchanged (the longest step), and starts any other earlier run of that name clean."""
        from dermino.pretrain import PretrainConfig, pretrain

        overrides = self.pretrain_overrides(run, knowledge)
        cfg = load_config(PretrainConfig, None, overrides)
        run_dir = Path(cfg.run.out_dir)
        inputs = _pretrain_inputs(cfg)
        note = ""
        if _finished_with(run_dir, inputs):
            out, note = run_dir, "reused the finished run of an earlier demo (same config and input files)"
        else:
            if run_dir.exists():
                print(f"    {run_dir} holds an earlier run with another config, other inputs or unfinished: "
                      "starting it clean", flush=True)
                shutil.rmtree(run_dir)
                note = "earlier run replaced (config, inputs or completion differed)"
            out = Path(pretrain(cfg))
            write_text_atomic(out / DEMO_INPUTS, json.dumps(inputs, indent=2, sort_keys=True))
        if note:
            print(f"    {note}", flush=True)
        self.pretrain_dirs[run] = out
        self.backbones[run] = str(_exported_weights(out))
        metrics = pd.read_csv(out / "metrics.csv")
        detail = {"out": str(out), "steps": int(len(metrics)), "last": metrics.iloc[-1].to_dict()}
        return {**detail, "note": note} if note else detail

    def evaluate(self) -> dict[str, Any]:
        from dermino.evaluate.config import BackboneSpec, DatasetSpec, EvalConfig
        from dermino.evaluate.runner import run_evaluation

        c = self.cfg
        cfg = EvalConfig(name="demo", out_dir=str(self.out / "eval"), bootstrap=c.bootstrap, seed=c.seed)
        cfg.protocols = ["knn", "linear", "fairness"] + (["fewshot"] if c.fewshot else [])
        cfg.backbones = [
            BackboneSpec(name=label, model=DEMO_ARCH, weights=w, overrides=self.arch_overrides())
            for label, w in self.backbones.items()
        ]
        cfg.reference = "random-init"
        cfg.datasets = [
            DatasetSpec(name="ham10000", manifest=str(self.manifests["ham10000"])),
            DatasetSpec(name="isic2017-melanoma", manifest=str(self.manifests["isic2017"]),
                        positive="melanoma", test_split="val", val_split=""),
        ]
        cfg.embed.image_size = c.eval_size
        cfg.embed.cache_dir = str(self.out / "cache" / "embeddings")
        cfg.fairness.attributes = ["sex", "age", "skin_tone"]
        cfg.fairness.min_group_size = 5
        cfg.fewshot.shots = [1, 2, 4, 8]
        cfg.fewshot.fractions = [0.1, 0.5, 1.0]
        cfg.fewshot.seeds = 3
        save_config(cfg, self.out / "eval_config.yaml")
        run_evaluation(cfg)
        return {"out": str(self.out / "eval")}

    def leaderboard(self) -> dict[str, Any]:
        from dermino.evaluate.config import BackboneSpec, DatasetSpec
        from dermino.evaluate.leaderboard import demo_leaderboard
        from dermino.report.leaderboard import write_leaderboard_report

        c = self.cfg
        backbones = [BackboneSpec(name=label, model=DEMO_ARCH, weights=w, overrides=self.arch_overrides())
                     for label, w in self.backbones.items()]
        backbones.append(BackboneSpec(name="resnet18-timm", model="timm:resnet18"))
        datasets = [
            DatasetSpec(name="ham10000", manifest=str(self.manifests["ham10000"])),
            DatasetSpec(name="isic2017-melanoma", manifest=str(self.manifests["isic2017"]),
                        positive="melanoma", test_split="val", val_split=""),
        ]
        embed = {"image_size": c.eval_size, "cache_dir": str(self.out / "cache" / "embeddings"), "preprocess": "config"}
        folder = demo_leaderboard(backbones, datasets, self.out / "leaderboard", embed=embed,
                                  bootstrap=min(c.bootstrap, 200), reference="random-init")
        write_leaderboard_report(folder, title="dermino demo: leaderboard")
        return {"out": str(folder)}

    def segment(self) -> dict[str, Any]:
        from dermino.segment import SegmentConfig, evaluate_segmentation, train_segmentation

        c = self.cfg
        results = {}
        for label, weights in self.backbones.items():
            if label == "ssl-only":
                continue  # keep the demo short: random init vs the full hybrid model
            cfg = SegmentConfig(
                manifest=str(self.manifests["ph2"]), name=label, backbone=DEMO_ARCH, weights=weights,
                backbone_overrides=self.arch_overrides(), head="linear", out=str(self.out / "segment" / label),
                img_size=[c.eval_size], epochs=c.seg_epochs, bootstrap=c.bootstrap, seed=c.seed,
                max_train=c.seg_max_images, device="cpu",
            )
            cfg.augment.enabled = False  # frozen features are then computed once per image
            run = train_segmentation(cfg)
            res = evaluate_segmentation(run, out_dir=self.out / "eval" / "results")
            results[label] = {k: m.value for k, m in res.metrics.items() if k in ("dice", "jaccard")}
        return results

    def retrieval(self) -> dict[str, Any]:
        """Similar cases: test queries beside their nearest training images (hybrid backbone)."""
        from dermino.data.manifest import read_manifest, resolve, split_labels
        from dermino.features import EmbedConfig, extract_embeddings
        from dermino.models import create
        from dermino.report.gallery import nearest_neighbours, retrieval_grid

        label = "hybrid" if "hybrid" in self.backbones else next(iter(self.backbones))
        model = create(DEMO_ARCH, weights=self.backbones[label], **self.arch_overrides())
        df = read_manifest(self.manifests["ham10000"])
        ecfg = EmbedConfig(image_size=self.cfg.eval_size, cache_dir=str(self.out / "cache" / "embeddings"))
        feats = extract_embeddings(model, df, ecfg, weights=self.backbones[label], model_name=label,
                                   progress=False).features
        train = np.flatnonzero(df["split"].to_numpy() == "train")
        test = np.flatnonzero(df["split"].to_numpy() == "test")
        labels = ["; ".join(split_labels(v)) or "?" for v in df["labels"]]
        rng = np.random.default_rng(self.cfg.seed)
        # one query per diagnosis first (the interesting rows), then random ones
        picked: list[int] = []
        for name in dict.fromkeys(labels[i] for i in test):
            picked.append(int(next(i for i in test if labels[i] == name)))
        picked = (picked + [int(i) for i in rng.permutation(test) if i not in picked])[: self.cfg.retrieval_queries]
        idx, sims = nearest_neighbours(feats[picked], feats[train], k=5)
        png = retrieval_grid(
            [resolve(df, df["image"].iat[i]) for i in picked],
            [labels[i] for i in picked],
            [[resolve(df, df["image"].iat[train[j]]) for j in row] for row in idx],
            [[labels[train[j]] for j in row] for row in idx],
            sims,
            self.out / "figures" / "retrieval.png",
        )
        same = float(np.mean([[labels[train[j]] == labels[q] for j in row] for q, row in zip(picked, idx, strict=True)]))
        return {"figure": str(png), "backbone": label, "neighbour_label_agreement": same}

    def deploy(self) -> dict[str, Any]:
        """What a clinic would put in front of clinicians: a calibrated classifier, the similar-case
        index it serves, attention overlays, and zero-shot scoring with the knowledge head."""
        from dermino.classifier.model import load_classifier
        from dermino.classifier.train import ClassifierConfig, train_classifier
        from dermino.data.images import read_rgb
        from dermino.data.manifest import read_manifest, resolve, split_labels
        from dermino.evaluate.zero_shot import ZeroShotConfig, head_path_for, run_zero_shot
        from dermino.features import EmbedConfig
        from dermino.report.gallery import attention_grid
        from dermino.serve.explain import explain_image
        from dermino.serve.index_build import build_index

        c = self.cfg
        label = "hybrid" if "hybrid" in self.backbones else next(iter(self.backbones))
        weights, ddir = self.backbones[label], self.out / "deploy"
        cache = str(self.out / "cache" / "embeddings")
        ccfg = ClassifierConfig(manifest=str(self.manifests["ham10000"]), out=str(ddir / "classifier"),
                                backbone=DEMO_ARCH, weights=weights or "", backbone_overrides=self.arch_overrides(),
                                image_size=c.eval_size, cache_dir=cache, n_resamples=c.bootstrap, seed=c.seed)
        clf_dir = train_classifier(ccfg)
        clf = load_classifier(clf_dir)
        build_index(clf, self.manifests["ham10000"], ddir / "index", cache_dir=cache, progress=False)
        # attention overlays of test images, one per diagnosis, with the calibrated top-1 suggestion
        df = read_manifest(self.manifests["ham10000"])
        test = df[df["split"] == "test"]
        firsts = test.groupby(test["labels"].map(lambda v: (split_labels(v) or ["?"])[0]), sort=True).head(1)
        images = [read_rgb(resolve(df, v)) for v in firsts["image"].head(4)]
        probs, _ = clf.predict(images)
        overlays = [explain_image(clf.backbone, clf.transform, im)[0] for im in images]
        captions = [f"truth: {(split_labels(t) or ['?'])[0]}\nAI: {clf.label_names[int(p.argmax())]} {p.max():.0%}"
                    for t, p in zip(firsts["labels"].head(4), probs, strict=True)]
        grid = attention_grid(images, overlays, captions, self.out / "figures" / "attention.png")
        detail: dict[str, Any] = {"backbone": label, "classifier": str(clf_dir), "index": str(ddir / "index"),
                                  "attention": str(grid),
                                  "serve": f"dermino serve --classifier {clf_dir} --index {ddir / 'index'}"}
        if weights and head_path_for(weights).is_file():
            zs = run_zero_shot(DEMO_ARCH, weights, str(self.manifests["ph2"]), ZeroShotConfig(splits=["test"]),
                               overrides=self.arch_overrides(), embed=EmbedConfig(image_size=c.eval_size,
                                                                                  cache_dir=cache),
                               bootstrap=c.bootstrap, seed=c.seed, dataset="ph2", name=label)
            write_text_atomic(ddir / "zeroshot.json", json.dumps(zs, indent=2, default=str))
            detail["zero_shot"] = str(ddir / "zeroshot.json")
        return detail

    def federate(self) -> dict[str, Any]:
        """Sites that cannot pool images: FedAvg over HAM10000's diagnosis-confirmation groups
        (histopathology, follow-up, consensus) vs each site alone vs pooled, on the hybrid backbone."""
        from dermino.federated.compare import compare
        from dermino.federated.config import FederatedConfig, validate
        from dermino.federated.simulation import simulate

        c = self.cfg
        label = "hybrid" if "hybrid" in self.backbones else next(iter(self.backbones))
        cfg = FederatedConfig(name="ham10000-dx_type", out_dir=str(self.out / "federated"), progress=False)
        cfg.backbone.model, cfg.backbone.weights = DEMO_ARCH, self.backbones[label]
        cfg.backbone.overrides = self.arch_overrides()
        cfg.embed.image_size, cfg.embed.cache_dir = c.eval_size, str(self.out / "cache" / "embeddings")
        cfg.data.manifests, cfg.data.column = [str(self.manifests["ham10000"])], "dx_type"
        # the paper's 2 rounds x 2 local epochs; lr 2e-3 instead of 2e-4, which barely moves a linear
        # head in that budget (docs/federated.md has both)
        cfg.train.lr = c.federated_lr
        cfg.strategy.fraction_evaluate = 0.0  # the comparison evaluates every model on the same rows
        cfg.compare.n_resamples, cfg.compare.seed = c.bootstrap, c.seed
        history = simulate(validate(cfg))
        out = compare(cfg)
        return {"backbone": label, "out": str(out), "clients": sorted(history["clients"].values()),
                "seconds_simulation": history["seconds"]}

    def report(self) -> dict[str, Any]:
        from dermino.report.demo_report import build_demo_report

        html_path, md_path = build_demo_report(self.out)
        return {"html": str(html_path), "markdown": str(md_path)}

    # ---------------------------------------------------------------- the run
    def run(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, self.out / "demo_config.yaml")
        t0 = time.perf_counter()
        data_src = self.cfg.data or "the bundled sample"
        self._step("data: manifests, splits and image check", f"dermino data prepare NAME --root {data_src} --out manifests/NAME.csv && dermino data check manifests/NAME.csv", self.prepare_data)
        self._step("knowledge: disease vocabulary and prototypes", "dermino knowledge build manifests/*.csv --out knowledge/", self.build_knowledge)
        self.backbones["random-init"] = None
        runs = [("hybrid", True)] + ([("ssl-only", False)] if self.cfg.ablation else [])
        for run, knowledge in runs:
            cmd = "dermino pretrain " + " ".join(self.pretrain_overrides(run, knowledge))
            self._step(f"pretrain: {run}", cmd, lambda r=run, k=knowledge: self.pretrain(r, k))
        self._step("evaluate: kNN, linear probe, fairness, few-shot", "dermino evaluate --config eval_config.yaml", self.evaluate)
        if self.cfg.leaderboard:
            self._step("leaderboard: the demo's backbones and a library baseline, preset dermino-paper",
                       "dermino leaderboard --preset dermino-paper --backbones hybrid,ssl-only,random-init,"
                       "resnet18-timm --reference random-init", self.leaderboard)
        self._step("segment: linear head on the frozen backbone (PH2)", "dermino segment train --manifest manifests/ph2.csv --backbone ... --head linear", self.segment)
        self._step("similar-case retrieval", "dermino embed ... (nearest neighbours by cosine)", self.retrieval)
        self._step("deploy: calibrated classifier, similar-case index, attention maps, zero-shot",
                   "dermino classifier train ... && dermino index build ... && dermino explain ... && "
                   "dermino zero-shot manifests/ph2.csv --weights ...", self.deploy)
        if self.cfg.federated:
            self._step("federated: FedAvg across HAM10000 sites vs local vs pooled",
                       "dermino federate simulate --config configs/federated/ham10000_dx_type.yaml && "
                       "dermino federate compare --config ...", self.federate)
        self._step("report", f"dermino report {self.out / 'eval' / 'results'}", self.report)
        total = time.perf_counter() - t0
        md = (self.out / "report.md").read_text()
        print("\n" + md)
        print(f"\ndemo finished in {total / 60:.1f} min; open {self.out / 'report.html'}")
        return self.out / "report.html"


#: written beside a finished demo pretraining run: what it was trained from (a rerun compares it)
DEMO_INPUTS = "demo_inputs.json"


def _pretrain_inputs(cfg: Any) -> dict[str, Any]:
    """The run's config and the sha256 of every existing file it names (manifests, vocabulary ...)."""
    from dermino.features.cache import file_hash

    config = json.loads(json.dumps(to_dict(cfg), default=str))
    files: dict[str, str] = {}

    def visit(v: Any) -> None:
        if isinstance(v, dict):
            for x in v.values():
                visit(x)
        elif isinstance(v, list):
            for x in v:
                visit(x)
        elif isinstance(v, str) and v and len(v) < 4096 and Path(v).is_file():
            files[v] = file_hash(v)

    visit(config)
    return {"config": config, "files": files}


def _finished_with(run_dir: Path, inputs: dict[str, Any]) -> bool:
    """Whether ``run_dir`` holds a finished run (exported backbone) made from exactly ``inputs``."""
    record = run_dir / DEMO_INPUTS
    if not (record.is_file() and (run_dir / "export" / "teacher_backbone.pt").is_file()):
        return False
    try:
        return json.loads(record.read_text()) == json.loads(json.dumps(inputs, sort_keys=True))
    except ValueError:
        return False


def _exported_weights(run_dir: Path) -> Path:
    """The teacher backbone a pretraining run exported (a state dict ``create(weights=)`` reads)."""
    path = run_dir / "export" / "teacher_backbone.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no exported teacher backbone at {path}")
    return path


def prepare_published(root: Path, out: Path, seed: int) -> dict[str, Path]:
    """Manifests of full-size data in the published layouts (``--full`` / ``--data``)."""
    from dermino.data.adapters import build
    from dermino.data.manifest import write_manifest
    from dermino.data.splits import assign_splits

    written = {}
    for name in ("ham10000", "ph2", "isic2017"):
        if not (root / name).is_dir():
            raise FileNotFoundError(f"{root / name} not found: --data needs ham10000/, ph2/ and isic2017/")
        df = assign_splits(build(name, root / name), test_fraction=0.5, val_fraction=0.1,
                           group_col="lesion_id", seed=seed)
        written[name] = write_manifest(df, out / f"{name}.csv")
    return written


def run_demo(cfg: DemoConfig) -> Path:
    return Demo(cfg).run()


def quick(cfg: DemoConfig) -> DemoConfig:
    """A reduced budget (tests, smoke runs): same steps, far fewer images and epochs."""
    cfg.depth, cfg.embed_dim, cfg.num_heads = 2, 64, 2
    cfg.global_size, cfg.local_size, cfg.n_local_crops = 42, 28, 2
    cfg.batch_size, cfg.pretrain_images, cfg.prototypes = 16, 64, 256
    cfg.eval_size, cfg.bootstrap, cfg.seg_epochs, cfg.seg_max_images = 42, 100, 2, 24
    cfg.fewshot = False
    return cfg


__all__ = ["DemoConfig", "run_demo", "quick", "to_dict"]
