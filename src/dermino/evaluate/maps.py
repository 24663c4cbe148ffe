"""2-D maps of embeddings: images coloured by diagnosis and by source, and the disease-name
prototypes, as the paper shows them (t-SNE; UMAP when umap-learn is installed).

A map is a picture of neighbourhoods, not a metric: it shows whether diagnoses cluster and
whether sources separate (a warning sign that a model encodes the camera, not the lesion).
Each map is written as a PNG plus a CSV of the coordinates, and listed in ``maps.json`` so a
report renders them from files (``dermino.report.maps_section``).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

METHODS = ("tsne", "umap")
MAX_LEGEND = 12


def umap_available() -> bool:
    return importlib.util.find_spec("umap") is not None


def project_2d(features: np.ndarray, method: str = "tsne", seed: int = 0, threads: int = 1) -> np.ndarray:
    """(N, D) -> (N, 2) on L2-normalised features (cosine geometry, as kNN uses).

    ``threads`` caps OpenMP/BLAS threads: t-SNE's spinning threads made a 60-point map take
    40 s instead of 0.7 s on a shared 2-core machine.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        return _project(features, method, seed)


def _project(features: np.ndarray, method: str, seed: int) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 3:
        raise ValueError(f"need an (N >= 3, D) feature array, got shape {x.shape}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if method == "umap":
        if not umap_available():
            raise ValueError("method='umap' needs umap-learn (pip install umap-learn); t-SNE needs nothing extra")
        import umap

        return umap.UMAP(n_neighbors=min(15, len(x) - 1), metric="cosine", random_state=seed).fit_transform(x)
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    if x.shape[1] > 50 and len(x) > 50:
        x = PCA(n_components=50, random_state=seed).fit_transform(x)
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, n_jobs=1).fit_transform(x)


def plot_map(coords: np.ndarray, groups: Sequence[str] | None, title: str, out: Path,
             text: Sequence[str] | None = None) -> Path:
    """Scatter coloured by group (the most frequent groups named, the rest 'other'); ``text``
    labels every point instead (prototype maps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    if groups is not None:
        g = pd.Series([str(v) or "unlabelled" for v in groups])
        top = g.value_counts().index[:MAX_LEGEND].tolist()
        g = g.where(g.isin(top), "other")
        cmap = plt.get_cmap("tab20")
        for k, name in enumerate([*top, "other"]):
            m = (g == name).to_numpy()
            if m.any():
                ax.scatter(coords[m, 0], coords[m, 1], s=10, alpha=0.8, color=cmap(k % 20),
                           label=f"{name} ({int(m.sum())})")
        ax.legend(fontsize=7, markerscale=1.5, loc="best", frameon=False)
    else:
        ax.scatter(coords[:, 0], coords[:, 1], s=14, color="#336699")
    for i, t in enumerate(text or []):
        ax.annotate(t, coords[i], fontsize=6, alpha=0.85)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out)
    return out


def write_maps(features: np.ndarray, df: pd.DataFrame, out_dir: str | Path, *, method: str = "tsne",
               prototypes: np.ndarray | None = None, prototype_names: Sequence[str] | None = None,
               title: str = "", seed: int = 0) -> Path:
    """Image maps (by diagnosis, by source) and a prototype map; returns ``maps.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if len(features) != len(df):
        raise ValueError(f"{len(features)} feature rows for {len(df)} manifest rows")
    coords = project_2d(features, method, seed)
    diagnosis = [str(v).split(";")[0] if str(v) else "unlabelled" for v in df.get("labels", [""] * len(df))]
    source = [str(v) for v in df.get("source", [""] * len(df))]
    pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1], "image": df["image"].tolist(), "diagnosis": diagnosis,
                  "source": source}).to_csv(out / f"image_map_{method}.csv", index=False)
    name = method.upper() if method == "umap" else "t-SNE"
    entries = [
        {"png": plot_map(coords, diagnosis, f"{title} images by diagnosis ({name})".strip(),
                         out / f"image_map_{method}_diagnosis.png").name,
         "caption": f"{len(df)} images, {name} of the embeddings, coloured by diagnosis"},
        {"png": plot_map(coords, source, f"{title} images by source ({name})".strip(),
                         out / f"image_map_{method}_source.png").name,
         "caption": "the same map coloured by source dataset: sources that separate mean the model "
                    "encodes where an image comes from"},
    ]
    if prototypes is not None:
        names = list(prototype_names or [str(i) for i in range(len(prototypes))])
        pc = project_2d(prototypes, method, seed)
        pd.DataFrame({"x": pc[:, 0], "y": pc[:, 1], "name": names}).to_csv(out / f"prototype_map_{method}.csv",
                                                                            index=False)
        entries.append({"png": plot_map(pc, None, f"disease-name prototypes ({name})", out /
                                        f"prototype_map_{method}.png", text=names).name,
                        "caption": f"{len(names)} disease-name prototypes (rows of W), {name}"})
    meta = {"method": method, "n_images": int(len(df)), "title": title, "maps": entries,
            "n_prototypes": 0 if prototypes is None else int(len(prototypes))}
    path = out / "maps.json"
    path.write_text(json.dumps(meta, indent=2))
    return path
