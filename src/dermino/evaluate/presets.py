"""Evaluation presets: named, documented sets of protocols and settings the field reports.

``dermino evaluate --preset NAME --config my.yaml``: the preset fills the config first, then
the YAML file, then ``key=value`` overrides, so any key can still be overridden (a config
that lists ``protocols`` replaces the preset's list: leave it out to use the preset's).

* ``dermino-paper``: the DermINO paper's tables: kNN (k=5, cosine) and linear probe
  (converged L2 logistic regression, C on validation), macro AUROC / F1 / balanced accuracy
  with bootstrap CIs and paired tests against the reference backbone; fairness by Fitzpatrick
  group (I-II / III-IV / V-VI) and sex; per-group calibration and equalised odds.
  Segmentation Dice/Jaccard is `dermino segment` (a layer above evaluation) and not run here.
* ``label-efficiency``: linear probes on 1, 10, 30, 50, 100 % of the training labels
  (lesion-grouped, stratified, 3 seeds, identical subsets for every backbone); curve with CIs
  and area under it (DermFM-Zero / PanDerm).
* ``zero-shot``: every text-capable backbone on every dataset with a prompts file in
  ``configs/eval/prompts/`` (and the knowledge head where a dermino backbone exported one).
* ``retrieval``: image-to-image R@1/5/10 and mAP by diagnosis; image-to-text R@k where the
  manifest has captions and the backbone a text tower.
"""

from __future__ import annotations

import copy
from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "dermino-paper": {
        "protocols": ["knn", "linear", "fairness", "calibration"],
        "main_metric": "auroc",
        "bootstrap": 1000,
        "knn": {"k": 5},
        "linear": {"method": "lbfgs"},
        "fairness": {"attributes": ["fitzpatrick", "sex", "age"], "protocol": "linear"},
    },
    "label-efficiency": {
        "protocols": ["label_efficiency"],
        "label_efficiency": {"fractions": [0.01, 0.1, 0.3, 0.5, 1.0], "seeds": 3, "metric": "auroc"},
        "linear": {"method": "lbfgs"},
    },
    "zero-shot": {"protocols": ["zeroshot"]},
    "retrieval": {"protocols": ["retrieval"], "retrieval": {"ks": [1, 5, 10]}},
}


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def preset_data(name: str, data: dict | None = None) -> dict:
    """The preset's keys with ``data`` (a loaded YAML config) merged over them."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return _merge(PRESETS[name], data or {})


def describe_presets() -> str:
    """One line per preset (for --help)."""
    return "; ".join(f"{k}: {', '.join(v['protocols'])}" for k, v in PRESETS.items())


def load_eval_config(path: str | None = None, overrides: list[str] | None = None, preset: str = ""):
    """Defaults, then the preset, then the YAML file, then ``key=value`` overrides; then every declared check."""


    from dermino.config import apply_overrides, check_config, from_dict, load_config, read_config_file
    from dermino.evaluate.config import EvalConfig

    if not preset:
        return load_config(EvalConfig, path, overrides)
    data = read_config_file(path) if path else {}
    cfg = from_dict(EvalConfig, preset_data(preset, data), where=f"preset {preset} + {path or 'defaults'}")
    cfg = check_config(apply_overrides(cfg, overrides), f"preset {preset}")
    cfg.preset = preset
    return cfg
