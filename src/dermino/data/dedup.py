"""Exact and near-duplicate images within and across manifests, in time linear in the corpus.

Public dermatology collections overlap (ISIC releases re-publish HAM10000, PH2-like lesions
reappear resized), so a model pretrained on a union of them may have seen its own test
images. Three stages, none of them all-pairs:

1. **hashes** (one pass, resumable): sha256 of the file bytes and a 64-bit DCT perceptual
   hash (pHash) of each image, written in chunks of rows under ``cache_dir`` so a killed run
   recomputes at most one chunk;
2. **candidates**: multi-index hashing. The 64 bits are cut into ``BANDS`` bands of 16;
   two hashes within Hamming distance ``d <= BANDS * (radius + 1) - 1`` agree on at least one
   band up to ``radius`` flipped bits (pigeonhole), so looking each band up in a sorted
   table, with every ``radius``-bit variant, finds every such pair without comparing all;
3. **confirmation**: a cosine similarity between image descriptors, computed only for the
   images that appear in a candidate pair (a dermino backbone via ``dermino.models.create``,
   or, when no backbone is given, high-pass grey thumbnails compared over a few crops).

Exact duplicates (same bytes) are pairs of equal sha256. Pairs are grouped into clusters
(union-find); the filtered corpus keeps one image per cluster and drops every corpus image
whose cluster holds an image of the ``against`` (evaluation) manifests.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.fft import dctn
from threadpoolctl import threadpool_limits

from dermino.progress import tqdm
from dermino.sharding import Shard

from ..files import atomic_path, cache_root
from .images import read_rgb
from .manifest import read_manifest, resolve

log = logging.getLogger(__name__)

HASH_VERSION = 1
BANDS = 4  # 4 x 16-bit bands of the 64-bit pHash
BAND_BITS = 16


@dataclass
class DedupConfig:
    max_hamming: int = 10  # pHash bits that may differ for a near-duplicate candidate (of 64)
    probe_radius: int = 1  # flipped bits probed per band: finds every pair with d <= 4*(r+1)-1
    min_cosine: float = 0.9  # descriptor cosine needed to confirm a candidate pair
    chunk_size: int = 2048  # rows per cached hash chunk
    cache_dir: str = ""  # "": $DERMINO_CACHE/dedup (dermino.files.cache_root), never the working directory
    max_bucket: int = 5000  # a band value shared by more images is uninformative (blank frames)
    per_image: int = 10  # nearest pHash candidates kept per image: bounds confirmation to 10 * N pairs
    workers: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.max_hamming < 64:
            raise ValueError(f"max_hamming must be in [0, 64), got {self.max_hamming}")
        if self.probe_radius not in (0, 1, 2):
            raise ValueError(f"probe_radius must be 0, 1 or 2, got {self.probe_radius}")
        # max_hamming above BANDS*(r+1)-1 (7 for r=1) is allowed: such pairs are found when one
        # band differs by <= r bits, which holds for most of them (the guarantee stops at 7).
        if not -1.0 <= self.min_cosine <= 1.0:
            raise ValueError(f"min_cosine must be in [-1, 1], got {self.min_cosine}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {self.chunk_size}")


# --------------------------------------------------------------------------- hashing
def phash(img: Image.Image) -> int:
    """64-bit DCT perceptual hash: the 8x8 lowest frequencies of a 32x32 grey image vs their median."""
    grey = img.convert("L").resize((32, 32), Image.BILINEAR)
    coef = dctn(np.asarray(grey, dtype=np.float64), norm="ortho")[:8, :8].ravel()
    bits = coef > np.median(coef[1:])
    return int(np.packbits(bits).view(">u8")[0])


def _open_small(path: Path) -> Image.Image:
    """Decode at reduced size when the format allows (JPEG draft): hashing needs 32x32."""
    with Image.open(path) as im:
        if im.format == "JPEG":
            im.draft("RGB", (64, 64))
            im.load()
            return im.convert("RGB")
    return read_rgb(path)


CROPS = (0.0, 0.02, 0.04)  # border fractions cut before describing: tolerates slight crops


def detail_descriptor(path: Path, side: int = 48) -> np.ndarray:
    """Model-free descriptor, (len(CROPS), side*side): unit-norm high-pass grey thumbnails of
    the image with 0, 2 and 4 % of each border cut. The high-pass keeps lesion texture rather
    than the dark-blob-on-skin layout every dermoscopy image shares; the crops let a slightly
    cropped copy match its original (similarity = best cosine over crop pairs)."""
    from PIL import ImageFilter

    im = read_rgb(path)
    w, h = im.size
    out = []
    for f in CROPS:
        c = im.crop((int(w * f), int(h * f), w - int(w * f), h - int(h * f))).convert("L")
        c = c.resize((side, side), Image.BILINEAR)
        a = np.asarray(c, np.float32) - np.asarray(c.filter(ImageFilter.GaussianBlur(3)), np.float32)
        v = a.ravel() - a.mean()
        out.append(v / (np.linalg.norm(v) + 1e-9))
    return np.stack(out)


def hash_file(path: Path) -> tuple[str, int, int, int]:
    """(sha256 hex, phash, width, height) of one image file."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    with Image.open(path) as im:
        w, h = im.size
    return digest, phash(_open_small(path)), w, h


def _chunk_key(paths: Sequence[Path]) -> str:
    h = hashlib.sha256(f"v{HASH_VERSION}".encode())
    for p in paths:
        st = p.stat()
        h.update(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _cache_folder(cfg: DedupConfig) -> Path:
    return Path(cfg.cache_dir) if cfg.cache_dir else cache_root() / "dedup"


def compute_hashes(paths: Sequence[Path], cfg: DedupConfig, progress: bool = True,
                   shard: Shard | None = None) -> pd.DataFrame:
    """sha256 / phash / size of every path, cached per chunk (resumable after a kill).

    With a ``shard`` of several torchrun processes each rank hashes the chunks it owns, then
    every rank reads all chunks: the table is the single-process one on every rank.
    """
    shard = shard or Shard()
    folder = _cache_folder(cfg) / "hashes"
    folder.mkdir(parents=True, exist_ok=True)
    chunks = [list(paths[lo: lo + cfg.chunk_size]) for lo in range(0, len(paths), cfg.chunk_size)]
    frames: dict[int, pd.DataFrame] = {}
    bar = tqdm(total=sum(len(c) for k, c in enumerate(chunks) if shard.owns(k)), desc="hash", unit="img",
               disable=not (progress and shard.is_main))
    pool = None
    if cfg.workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(cfg.workers)
    files = []
    try:
        for k, chunk in enumerate(chunks):
            for i, p in enumerate(chunk):
                if not p.is_file():
                    raise FileNotFoundError(f"image not found (row {k * cfg.chunk_size + i}): {p}")
            file = folder / f"{_chunk_key(chunk)}.parquet"
            files.append(file)
            if not shard.owns(k):
                continue
            if file.is_file():
                frames[k] = pd.read_parquet(file)
                bar.update(len(chunk))
                continue
            rows = pool.map(hash_file, chunk, chunksize=64) if pool else map(hash_file, chunk)
            out = []
            for p, r in zip(chunk, rows, strict=True):
                out.append((str(p), *r))
                bar.update(1)
            df = pd.DataFrame(out, columns=["path", "sha256", "phash", "width", "height"])
            df["phash"] = df["phash"].astype(np.uint64)
            tmp = file.with_name(file.name + f".tmp{os.getpid()}")
            df.to_parquet(tmp, index=False)
            tmp.replace(file)
            frames[k] = df
    finally:
        bar.close()
        if pool:
            pool.shutdown()
    shard.barrier()
    for k, file in enumerate(files):
        if k not in frames:
            if not file.is_file():
                raise RuntimeError(f"dedup: hash chunk {file} of another rank is missing; under torchrun on "
                                   "several nodes --cache-dir must be on a filesystem every node sees")
            frames[k] = pd.read_parquet(file)
    if not frames:
        return pd.DataFrame(columns=["path", "sha256", "phash", "width", "height"])
    return pd.concat([frames[k] for k in range(len(chunks))], ignore_index=True)


# --------------------------------------------------------------------------- candidates
def _popcount64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64)
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(1).astype(np.int64)


def _flips(radius: int) -> np.ndarray:
    masks = [0]
    for r in range(1, radius + 1):
        for bits in combinations(range(BAND_BITS), r):
            masks.append(sum(1 << b for b in bits))
    return np.array(masks, dtype=np.int64)


def candidate_pairs(hashes: np.ndarray, max_hamming: int, probe_radius: int = 1,
                    max_bucket: int = 5000, per_image: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) with ``popcount(h_i ^ h_j) <= max_hamming``, found by multi-index hashing.

    Returns ``(pairs (P, 2), distances (P,))`` sorted by (i, j). Cost: one sort per band plus
    the entries that share a (probed) band value, filtered as they are produced so memory
    holds only pairs within ``max_hamming``. ``per_image`` keeps, for each image, only its
    ``per_image`` nearest candidates (a pair survives when it is among the nearest of either
    image): the confirmation stage then costs at most ``per_image * N`` comparisons however
    alike a collection's images look.
    """
    h = np.asarray(hashes, dtype=np.uint64)
    n = len(h)
    empty = np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    if n < 2:
        return empty
    flips = _flips(probe_radius)
    keys: list[np.ndarray] = []
    dists: list[np.ndarray] = []
    for b in range(BANDS):
        band = ((h >> np.uint64(b * BAND_BITS)) & np.uint64(0xFFFF)).astype(np.int64)
        order = np.argsort(band, kind="stable")
        values, starts, counts = np.unique(band[order], return_index=True, return_counts=True)
        if (counts > max_bucket).any():
            log.warning("dedup: %d band value(s) shared by > %d images skipped (band %d)",
                        int((counts > max_bucket).sum()), max_bucket, b)
        for f in flips:
            probe = band ^ f
            pos = np.minimum(np.searchsorted(values, probe), len(values) - 1)
            hit = (values[pos] == probe) & (counts[pos] <= max_bucket)
            qi = np.nonzero(hit)[0]
            if not len(qi):
                continue
            c, s0 = counts[pos[qi]], starts[pos[qi]]
            rep_i = np.repeat(qi, c)
            rep_j = order[np.repeat(s0, c) + np.arange(c.sum()) - np.repeat(np.cumsum(c) - c, c)]
            keep = rep_i < rep_j
            rep_i, rep_j = rep_i[keep], rep_j[keep]
            d = _popcount64(h[rep_i] ^ h[rep_j])
            ok = d <= max_hamming
            keys.append(rep_i[ok] * n + rep_j[ok])
            dists.append(d[ok])
    if not keys:
        return empty
    key, first = np.unique(np.concatenate(keys), return_index=True)
    dist = np.concatenate(dists)[first]
    pairs = np.stack([key // n, key % n], 1)
    if per_image and len(pairs):
        df = pd.DataFrame({"i": pairs[:, 0], "j": pairs[:, 1], "d": dist, "k": np.arange(len(pairs))})
        both = pd.concat([df[["i", "d", "k"]].rename(columns={"i": "img"}),
                          df[["j", "d", "k"]].rename(columns={"j": "img"})]).sort_values(["img", "d"], kind="stable")
        near = both[both.groupby("img").cumcount() < per_image]["k"].unique()
        near.sort()
        pairs, dist = pairs[near], dist[near]
    return pairs, dist


# --------------------------------------------------------------------------- descriptors
Embedder = Callable[[list[Path]], np.ndarray]


def detail_embedder(paths: list[Path]) -> np.ndarray:
    """(N, len(CROPS), 48*48) descriptors of ``detail_descriptor``."""
    if not paths:
        return np.zeros((0, len(CROPS), 48 * 48), np.float32)
    return np.stack([detail_descriptor(p) for p in paths])


# what names an embedder's output in a shared cache: an Embedder may carry ``identity``, a string
# or a function returning one
detail_embedder.identity = f"detail:v{HASH_VERSION}:crops={CROPS}:side=48"  # type: ignore[attr-defined]


def pair_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of (P, D) arrays; for (P, K, D) views the best over the K x K view pairs."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if a.ndim == 2:
        a, b = a[:, None], b[:, None]
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return np.concatenate([np.matmul(a[lo: lo + 4096], b[lo: lo + 4096].transpose(0, 2, 1)).reshape(
        len(a[lo: lo + 4096]), -1).max(1) for lo in range(0, len(a), 4096)]) if len(a) else np.zeros(0)


def _describe(paths: list[Path], embedder: Embedder, cache_dir: Path, progress: bool,
              batch: int = 512) -> np.ndarray:
    """Descriptors of ``paths`` in batches, into a float16 array on disk (memory stays flat)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    first = np.asarray(embedder(paths[:1]))
    file = cache_dir / f"descriptors.{os.getpid()}.npy"
    out = np.lib.format.open_memmap(file, mode="w+", dtype=np.float16, shape=(len(paths), *first.shape[1:]))
    try:
        for lo in tqdm(range(0, len(paths), batch), desc="describe", unit="batch", disable=not progress):
            out[lo: lo + batch] = embedder(paths[lo: lo + batch])
        out.flush()
        return np.load(file, mmap_mode="r")
    finally:
        del out
        file.unlink(missing_ok=True)  # the open map keeps the data readable until released


def _describe_shared(paths: list[Path], embedder: Embedder, cache_dir: Path, shard: Shard, progress: bool,
                     batch: int = 512) -> np.ndarray | None:
    """``_describe`` split across torchrun ranks: batch ``b`` of 512 is computed by rank ``b % N``
    (the same batches, so the same numbers, as one process) and saved under a key of the
    embedder's ``identity`` and the images, so a restarted job skips finished batches. Rank 0
    gathers them into one array; the other ranks get None."""
    identity = getattr(embedder, "identity", None)
    identity = identity() if callable(identity) else identity
    if not identity:
        raise ValueError("dedup under torchrun needs an embedder with an 'identity' attribute "
                         "(what its descriptors are cached under)")
    shard.agree(str(identity), "descriptor (embedder identity)")
    h = hashlib.sha256(f"{identity}\n".encode())
    h.update(_chunk_key(paths).encode())
    folder = cache_dir / "descriptors" / h.hexdigest()[:24]
    folder.mkdir(parents=True, exist_ok=True)
    starts = list(range(0, len(paths), batch))
    file = lambda b: folder / f"batch_{b:05d}.npy"  # noqa: E731
    mine = [b for b in range(len(starts)) if shard.owns(b) and not file(b).is_file()]
    for b in tqdm(mine, desc="describe", unit="batch", disable=not (progress and shard.is_main)):
        vec = np.asarray(embedder(paths[starts[b]: starts[b] + batch])).astype(np.float16)
        with atomic_path(file(b)) as tmp, open(tmp, "wb") as fh:
            np.save(fh, vec)
    shard.barrier()
    if not shard.is_main:
        return None
    absent = [b for b in range(len(starts)) if not file(b).is_file()]
    if absent:
        raise RuntimeError(f"dedup: descriptor batches {absent[:5]} of other ranks are missing in {folder}; "
                           "under torchrun on several nodes --cache-dir must be on a filesystem every node sees")
    first = np.load(file(0), mmap_mode="r")
    out_file = cache_dir / f"descriptors.{os.getpid()}.npy"
    out = np.lib.format.open_memmap(out_file, mode="w+", dtype=np.float16, shape=(len(paths), *first.shape[1:]))
    try:
        for b, lo in enumerate(starts):
            out[lo: lo + batch] = np.load(file(b))
        out.flush()
        return np.load(out_file, mmap_mode="r")
    finally:
        del out
        out_file.unlink(missing_ok=True)


# --------------------------------------------------------------------------- the run
@dataclass
class DedupResult:
    table: pd.DataFrame  # one row per image: manifest, row, role, path, sha256, phash, cluster, keep
    pairs: pd.DataFrame  # i, j, kind (exact/near), hamming, cosine, scope (within/cross), sets
    stats: dict = field(default_factory=dict)


def _roles_table(manifests: Sequence[str | Path], against: Sequence[str | Path]) -> tuple[pd.DataFrame, dict]:
    rows, frames = [], {}
    for role, items in (("corpus", manifests), ("against", against)):
        for m in items:
            df = read_manifest(m)
            frames[str(m)] = df
            for i, cell in enumerate(df["image"].tolist()):
                p = resolve(df, cell)
                if p is None:
                    raise ValueError(f"{m}: row {i}: empty 'image' cell")
                rows.append({"manifest": str(m), "row": i, "role": role, "path": os.path.abspath(p),
                             "source": df["source"].iat[i] if "source" in df.columns else "",
                             "split": df["split"].iat[i] if "split" in df.columns else ""})
    return pd.DataFrame(rows), frames


def _union_find(n: int, pairs: np.ndarray) -> np.ndarray:
    parent = np.arange(n)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in pairs:
        ri, rj = find(int(i)), find(int(j))
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return np.array([find(i) for i in range(n)])


def find_duplicates(manifests: Sequence[str | Path], against: Sequence[str | Path] = (),
                    cfg: DedupConfig | None = None, embedder: Embedder | None = None,
                    progress: bool = True, shard: Shard | None = None) -> DedupResult | None:
    """Exact and near duplicates among the images of ``manifests`` and ``against``.

    With a ``shard`` of several torchrun processes (every rank calls this with the same
    arguments) the hashing and the descriptors are split across the ranks; rank 0 confirms
    the pairs and returns the result, the same as one process would; other ranks return None.
    """
    cfg = cfg or DedupConfig()
    shard = shard or Shard()
    embedder = embedder or detail_embedder
    table, _ = _roles_table(manifests, against)
    if table.empty:
        raise ValueError("dedup: the manifests have no rows")
    paths = [Path(p) for p in table["path"]]
    hashes = compute_hashes(paths, cfg, progress=progress, shard=shard)
    table["sha256"] = hashes["sha256"].to_numpy()
    table["phash"] = hashes["phash"].to_numpy().astype(np.uint64)
    n = len(table)
    # exact: consecutive members of each sha256 group
    exact = []
    for _, idx in table.groupby("sha256").indices.items():
        if len(idx) > 1:
            idx = np.sort(idx)
            exact += [(idx[0], k) for k in idx[1:]]
    exact_pairs = np.array(exact, dtype=np.int64).reshape(-1, 2)
    cand, dist = candidate_pairs(table["phash"].to_numpy(), cfg.max_hamming, cfg.probe_radius,
                                 cfg.max_bucket, cfg.per_image)
    same = table["sha256"].to_numpy()
    keep = same[cand[:, 0]] != same[cand[:, 1]]  # exact pairs are already counted
    cand, dist = cand[keep], dist[keep]
    cos = np.zeros(len(cand), np.float32)
    if len(cand):
        need = np.unique(cand)
        if shard.enabled:
            vec = _describe_shared([paths[i] for i in need], embedder, _cache_folder(cfg), shard, progress)
        else:
            vec = _describe([paths[i] for i in need], embedder, _cache_folder(cfg), progress)
    if not shard.is_main:
        return None
    if len(cand):
        rows = np.searchsorted(need, cand)
        # many tiny matmuls: BLAS threads only spin (300 s instead of 12 s on a busy 2-core machine)
        with threadpool_limits(limits=1):
            cos = np.concatenate([pair_cosine(vec[rows[lo: lo + 4096, 0]], vec[rows[lo: lo + 4096, 1]])
                                  for lo in range(0, len(rows), 4096)]).astype(np.float32)
    near = cos >= cfg.min_cosine
    pairs = pd.DataFrame({
        "i": np.concatenate([exact_pairs[:, 0], cand[near, 0]]).astype(int),
        "j": np.concatenate([exact_pairs[:, 1], cand[near, 1]]).astype(int),
        "kind": ["exact"] * len(exact_pairs) + ["near"] * int(near.sum()),
        "hamming": np.concatenate([np.zeros(len(exact_pairs), int), dist[near]]),
        "cosine": np.concatenate([np.ones(len(exact_pairs), np.float32), cos[near]]),
    })
    roles = table["role"].to_numpy()
    mans = table["manifest"].to_numpy()
    pairs["scope"] = np.where(mans[pairs.i] == mans[pairs.j], "within", "cross")
    pairs["roles"] = [f"{roles[i]}-{roles[j]}" for i, j in zip(pairs.i, pairs.j, strict=True)]
    for col in ("path", "source", "split"):
        pairs[f"{col}_i"] = table[col].to_numpy()[pairs.i]
        pairs[f"{col}_j"] = table[col].to_numpy()[pairs.j]
    cluster = _union_find(n, pairs[["i", "j"]].to_numpy())
    table["cluster"] = cluster
    has_test = pd.Series(roles == "against").groupby(cluster).any()
    first_corpus = table[table.role == "corpus"].groupby("cluster").head(1).index
    keep_mask = np.zeros(n, bool)
    keep_mask[first_corpus] = True
    keep_mask &= ~has_test.reindex(cluster).to_numpy()
    keep_mask[roles == "against"] = True
    table["keep"] = keep_mask
    corpus = roles == "corpus"
    stats = {
        "images": int(n), "corpus_images": int(corpus.sum()), "against_images": int((~corpus).sum()),
        "exact_pairs": int(len(exact_pairs)), "candidate_pairs": int(len(cand)),
        "near_pairs": int(near.sum()),
        "corpus_dropped_as_test_overlap": int((corpus & has_test.reindex(cluster).to_numpy()).sum()),
        "corpus_dropped_as_internal_duplicate": int((corpus & ~keep_mask).sum()
                                                    - (corpus & has_test.reindex(cluster).to_numpy()).sum()),
        "corpus_kept": int((corpus & keep_mask).sum()),
        "by_roles": pairs.groupby(["roles", "kind"]).size().rename("n").reset_index().to_dict("records"),
        "cross_split_within_manifest": int(((pairs.scope == "within") & (pairs.split_i != pairs.split_j)).sum()),
        "by_sources": pairs.assign(sources=[" / ".join(sorted({a, b})) for a, b in
                                            zip(pairs.source_i, pairs.source_j, strict=True)])
        .groupby(["sources", "kind"]).size().rename("n").reset_index().to_dict("records"),
        "config": asdict(cfg),
    }
    return DedupResult(table, pairs, stats)


# --------------------------------------------------------------------------- outputs
def write_outputs(result: DedupResult, out_dir: str | Path, thumbnails: int = 200) -> dict[str, Path]:
    """pairs.csv, images.csv, summary.json, the filtered manifests and report.html."""
    from .manifest import write_manifest

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, frame in (("pairs", result.pairs), ("images", result.table.assign(phash=lambda d: d.phash.map(
            lambda v: f"{int(v):016x}")))):
        path = out / f"{name}.csv"
        tmp = path.with_name(path.name + ".tmp")
        frame.to_csv(tmp, index=False)
        tmp.replace(path)
        written[name] = path
    for m, part in result.table[result.table.role == "corpus"].groupby("manifest", sort=False):
        df = read_manifest(m)
        kept = df.iloc[part[part.keep]["row"].to_numpy()].reset_index(drop=True)
        kept.attrs["root"] = df.attrs["root"]
        stem = Path(m).stem
        written[f"filtered:{m}"] = write_manifest(kept, out / f"{stem}.dedup.csv")
    summary = out / "summary.json"
    summary.write_text(json.dumps(result.stats, indent=2, default=str))
    written["summary"] = summary
    written["report"] = write_html(result, out, thumbnails)
    return written


def _thumb_uri(path: str, side: int = 120) -> str:
    import base64
    import io

    try:
        im = read_rgb(path)
    except OSError:
        return ""
    im.thumbnail((side, side))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def write_html(result: DedupResult, out: Path, limit: int = 200) -> Path:
    """One self-contained HTML page: counts, then pairs (test overlaps first) with thumbnails."""
    import html

    order = {"corpus-against": 0, "against-corpus": 0, "corpus-corpus": 1, "against-against": 2}
    pairs = result.pairs.assign(_o=result.pairs.roles.map(order)).sort_values(["_o", "kind", "cosine"],
                                                                              ascending=[True, True, True])
    s = result.stats
    rows = []
    for r in pairs.head(limit).itertuples():
        rows.append(
            f"<tr><td><img src='{_thumb_uri(r.path_i)}'><br>{html.escape(r.source_i)}<br>"
            f"<small>{html.escape(Path(r.path_i).name)}</small></td>"
            f"<td><img src='{_thumb_uri(r.path_j)}'><br>{html.escape(r.source_j)} {html.escape(str(r.split_j))}<br>"
            f"<small>{html.escape(Path(r.path_j).name)}</small></td>"
            f"<td>{r.kind}</td><td>{r.roles}</td><td>{r.scope}</td><td>{r.hamming}</td><td>{r.cosine:.3f}</td></tr>"
        )
    more = f"<p>{len(pairs) - limit} more pairs in pairs.csv</p>" if len(pairs) > limit else ""
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>dermino dedup report</title>
<style>body{{font-family:sans-serif;margin:2em}}td{{padding:4px;border-bottom:1px solid #ddd;vertical-align:top}}
img{{max-width:120px}}</style></head><body>
<h1>Duplicate review</h1>
<p>{s['images']} images ({s['corpus_images']} corpus, {s['against_images']} evaluation);
{s['exact_pairs']} exact pairs, {s['near_pairs']} near pairs confirmed of {s['candidate_pairs']} pHash candidates.
Corpus images kept: {s['corpus_kept']}; dropped for overlapping an evaluation image:
{s['corpus_dropped_as_test_overlap']}; dropped as internal duplicates: {s['corpus_dropped_as_internal_duplicate']}.</p>
<table><tr><th>image i</th><th>image j</th><th>kind</th><th>roles</th><th>scope</th><th>pHash bits</th>
<th>cosine</th></tr>{''.join(rows)}</table>{more}</body></html>"""
    path = out / "report.html"
    path.write_text(page)
    return path


# --------------------------------------------------------------------------- overlap guard
def check_overlap(corpus: pd.DataFrame, eval_manifests: Sequence[str | Path], policy: str = "refuse",
                  max_hamming: int = 3, cache_dir: str = "") -> int:
    """Count corpus images identical or near-identical (pHash) to an evaluation image.

    Called at the start of pretraining: ``policy`` ``refuse`` raises, ``warn`` logs, ``off``
    skips. Paths in ``corpus`` must resolve (absolute, or relative to ``attrs['root']``).
    """
    if policy not in ("refuse", "warn", "off"):
        raise ValueError(f"overlap policy must be refuse, warn or off, got {policy!r}")
    if policy == "off" or not eval_manifests:
        return 0
    cfg = DedupConfig(max_hamming=max_hamming, probe_radius=0, cache_dir=cache_dir)
    cpaths = [resolve(corpus, v) for v in corpus["image"]]
    epaths = []
    for m in eval_manifests:
        df = read_manifest(m)
        epaths += [resolve(df, v) for v in df["image"]]
    h = compute_hashes([*cpaths, *epaths], cfg, progress=False)
    nc = len(cpaths)
    overlap = set(np.nonzero(h["sha256"].iloc[:nc].isin(set(h["sha256"].iloc[nc:])).to_numpy())[0].tolist())
    pairs, _ = candidate_pairs(h["phash"].to_numpy(), max_hamming, 0)
    cross = pairs[(pairs[:, 0] < nc) & (pairs[:, 1] >= nc)]
    overlap |= set(cross[:, 0].tolist())
    if overlap:
        examples = ", ".join(str(cpaths[i]) for i in sorted(overlap)[:3])
        msg = (f"{len(overlap)} pretraining image(s) duplicate evaluation images of "
               f"{', '.join(map(str, eval_manifests))} (e.g. {examples}); run `dermino data dedup` "
               "and pretrain on its filtered manifest")
        if policy == "refuse":
            raise ValueError(msg + " (or set data.overlap_policy=warn)")
        log.warning(msg)
    return len(overlap)
