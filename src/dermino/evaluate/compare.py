"""Paired comparison of two backbones of one evaluation run, from its saved test predictions."""

from __future__ import annotations

from pathlib import Path


def compare_backbones(eval_dir: str | Path, a: str, b: str, metric: str = "auroc",
                      n_resamples: int = 1000, seed: int = 0) -> list[dict]:
    """Paired comparisons of ``a`` against ``b`` on every (dataset, kNN/linear) cell they share."""
    from dermino.evaluate.tables import MAIN_TASKS, compare
    from dermino.results import read_results

    eval_dir = Path(eval_dir)
    if not (eval_dir / "results").is_dir():
        raise FileNotFoundError(f"{eval_dir} has no results/ folder: give the out_dir of a dermino evaluate run")
    results = read_results(eval_dir / "results")
    names = sorted({r.backbone for r in results})
    for name in (a, b):
        if name not in names:
            raise ValueError(f"backbone {name!r} not in {eval_dir}/results (have: {', '.join(names)})")
    cells = lambda bb: {(r.dataset, r.task) for r in results if r.backbone == bb and r.task in MAIN_TASKS}  # noqa: E731
    shared = sorted(cells(a) & cells(b))
    out = [c for ds, task in shared if (c := compare(eval_dir, ds, task, a, b, metric, n_resamples, seed))]
    if not out:
        raise ValueError(f"no dataset/protocol has saved test predictions for both {a!r} and {b!r} in {eval_dir}")
    return out
