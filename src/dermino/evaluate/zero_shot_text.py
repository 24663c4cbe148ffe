"""Zero-shot diagnosis through a vision-language backbone's own text tower, from a prompts file.

Every text-capable backbone (``dermino.models.text.text_tower(model)`` is not None: CLIP,
SigLIP, BiomedCLIP, MONET, DermLIP ...) is scored on every dataset that has a prompts file
(``configs/eval/prompts/<dataset>.yaml``), the protocol DermFM-Zero reports:

* each class's texts are put into the backbone's own ``template``, encoded, averaged and
  re-normalised (prompt ensembling, as CLIP does);
* an image's class scores are ``logit_scale * cos(image proj, class text)``, softmaxed over
  the prompt file's classes;
* the prompt classes map onto the task's classes by canonical disease name; for a binary
  task (``positive: melanoma``) the positive class's probability is that class's, and every
  other prompt class counts towards "not melanoma".

No labels are fitted, so every labelled test row is scored; the test split is the same as
the other protocols' so the numbers sit in the same table.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import yaml

from dermino.data.disease_names import normalise_disease_name

#: where the shipped prompts files live (one per dataset, named like the dataset)
PROMPTS_DIR = Path("configs") / "eval" / "prompts"


def load_prompts(path: str | Path) -> dict[str, list[str]]:
    """``{canonical class name: [texts]}`` from a prompts YAML (``classes: {name: [texts] | text}``)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    classes = data.get("classes") if isinstance(data, dict) else None
    if not isinstance(classes, dict) or not classes:
        raise ValueError(f"{path}: a prompts file needs a non-empty `classes:` mapping of name -> texts")
    out: dict[str, list[str]] = {}
    for name, texts in classes.items():
        texts = [texts] if isinstance(texts, str) else list(texts or [])
        if not texts:
            raise ValueError(f"{path}: class {name!r} has no prompt texts")
        out[normalise_disease_name(str(name))] = [str(t) for t in texts]
    return out


def find_prompts(dataset: str, explicit: str = "", roots: Sequence[Path] = ()) -> Path | None:
    """The prompts file for ``dataset``: ``explicit`` if given, else the shipped file whose name is
    the longest prefix of the dataset name (``isic2017-melanoma-sample`` -> ``isic2017.yaml``)."""
    if explicit:
        return Path(explicit)
    folders = [*roots, PROMPTS_DIR, Path(__file__).resolve().parents[3] / PROMPTS_DIR]
    for folder in folders:
        if not folder.is_dir():
            continue
        stems = sorted((p.stem for p in folder.glob("*.yaml")), key=len, reverse=True)
        for stem in stems:
            if dataset == stem or dataset.startswith(stem + "-") or dataset.startswith(stem + "_"):
                return folder / f"{stem}.yaml"
    return None


@torch.inference_mode()
def class_text_embeddings(tower, prompts: dict[str, list[str]]) -> tuple[list[str], np.ndarray]:
    """(class names, (K, D) unit vectors): each class's prompts through the template, averaged."""
    names, rows = [], []
    for name, texts in prompts.items():
        emb = tower.encode([tower.template.format(t) if "{}" in tower.template else t for t in texts])
        emb = torch.as_tensor(emb, dtype=torch.float32)
        mean = emb.mean(0)
        rows.append((mean / mean.norm().clamp_min(1e-12)).numpy())
        names.append(name)
    return names, np.stack(rows)


def zero_shot_text_probs(image_proj: np.ndarray, text: np.ndarray, logit_scale: float) -> np.ndarray:
    """Softmax over classes of ``logit_scale * cos(image, class text)``."""
    img = np.asarray(image_proj, dtype=np.float64)
    img = img / np.clip(np.linalg.norm(img, axis=1, keepdims=True), 1e-12, None)
    logits = logit_scale * img @ np.asarray(text, dtype=np.float64).T
    logits -= logits.max(1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(1, keepdims=True)


def to_task_classes(probs: np.ndarray, prompt_classes: list[str], task_classes: list[str],
                    positive: str = "") -> np.ndarray:
    """Map prompt-class probabilities onto the task's classes (binary: positive vs the rest)."""
    if positive:
        pos = normalise_disease_name(positive)
        if pos not in prompt_classes:
            raise ValueError(f"zero-shot: positive class {positive!r} has no prompts (have {prompt_classes})")
        p = probs[:, prompt_classes.index(pos)]
        return np.stack([1 - p, p], 1)
    index = {c: i for i, c in enumerate(prompt_classes)}
    missing = [c for c in task_classes if normalise_disease_name(c) not in index]
    if missing:
        raise ValueError(f"zero-shot: classes {missing} have no prompts (prompt classes: {prompt_classes})")
    out = np.stack([probs[:, index[normalise_disease_name(c)]] for c in task_classes], 1)
    return out / np.clip(out.sum(1, keepdims=True), 1e-12, None)
