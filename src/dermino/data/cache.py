"""A pre-resized, sharded image cache: WebDataset tar shards plus an index for random access.

Why: decoding 600x450 JPEGs and cropping them on every step costs ~20 ms of CPU per image,
so the loader, not the GPU, sets the pace of pretraining. Resizing each image once (shorter
side to ``size``) and storing it losslessly makes every later epoch read a small file.

Layout of a cache folder::

    shard-000000.tar   WebDataset shard: ``{key}.png`` (or .jpg) + ``{key}.json`` per image
    shard-000000.json  done record of that shard: members, byte offsets, sha256 (atomic)
    plan.json          what is being built (settings + the images of every shard)
    index.json         written when every shard is done: the whole cache, read by loaders

Each shard is written to a temporary file and renamed, then its done record is written
(also atomically), so a killed build resumes at the first shard without a record and never
writes an image twice. Readers look images up by the absolute path of the original file and
``pread`` the member at its recorded offset, so the loaders keep random access (and the exact,
resumable sample order of ``ResumableSampler``); a member whose bytes no longer match their
sha256, or a shard that is missing or has the wrong size, is reported by name and its images are
treated as unreadable (skipped by the loaders' ``on_bad_image`` rule), never used silently.
The shards stay plain WebDataset tars, so ``webdataset.WebDataset(urls)`` streams them too.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from PIL import Image

from dermino.data.images import ImageReadError, read_rgb
from dermino.data.manifest import read_manifest, resolve
from dermino.files import atomic_path, write_text_atomic
from dermino.progress import tqdm

log = logging.getLogger(__name__)

CACHE_VERSION = 1
FORMATS = ("png", "jpg")
INDEX = "index.json"
PLAN = "plan.json"


def resize_short(image: Image.Image, size: int) -> Image.Image:
    """Shorter side to ``size`` (bicubic, antialiased by PIL); images already smaller are kept.

    The cache stores exactly this, so ``resize_short(read_rgb(p), size)`` is what a loader over
    the original files must apply to see the cache's pixels.
    """
    w, h = image.size
    short = min(w, h)
    if short <= size:
        return image
    scale = size / short
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    return image.resize(new, Image.BICUBIC)


def _encode(image: Image.Image, fmt: str, quality: int) -> bytes:
    buf = io.BytesIO()
    if fmt == "png":
        image.save(buf, format="PNG", compress_level=1)  # fast to write; decoding cost does not depend on it
    else:
        image.save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def _sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def shard_name(i: int) -> str:
    return f"shard-{i:06d}"


# --------------------------------------------------------------------------- building


@dataclass
class CacheReport:
    """What a build or a verification found."""

    out: Path
    images: int = 0
    shards: int = 0
    built_shards: int = 0  # shards written by this call (the rest were already done)
    failed: dict[str, str] = field(default_factory=dict)  # original path -> reason it could not be read
    bad_shards: dict[str, str] = field(default_factory=dict)  # shard file name -> what is wrong
    bytes: int = 0
    seconds: float = 0.0


def plan_images(manifests: Sequence[str | Path]) -> list[str]:
    """Absolute paths of the distinct images of the manifests, in manifest order."""
    paths: dict[str, None] = {}
    for m in manifests:
        df = read_manifest(m)
        if "image" not in df.columns:
            raise ValueError(f"manifest {m} has no 'image' column")
        for i, v in enumerate(df["image"]):
            p = resolve(df, v)
            if p is None:
                raise ValueError(f"manifest {m} row {i}: empty 'image' path")
            paths[os.path.abspath(p)] = None
    if not paths:
        raise ValueError(f"no images in {', '.join(str(m) for m in manifests)}")
    return list(paths)


def _build_shard(out: str, index: int, first_key: int, paths: list[str], size: int, fmt: str, quality: int) -> dict:
    """Write one shard (temp file + rename) and its done record; runs in a worker process."""
    out_dir = Path(out)
    name = shard_name(index)
    tar_path = out_dir / f"{name}.tar"
    members: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    with atomic_path(tar_path) as tmp:  # a killed worker leaves no half shard under the real name
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for j, path in enumerate(paths):
                key = f"{first_key + j:09d}"
                try:
                    image = resize_short(read_rgb(path), size)
                except ImageReadError as exc:
                    failed[path] = exc.reason
                    continue
                data = _encode(image, fmt, quality)
                meta = json.dumps({"path": path, "width": image.width, "height": image.height}).encode()
                for member, blob in ((f"{key}.{fmt}", data), (f"{key}.json", meta)):
                    info = tarfile.TarInfo(member)
                    info.size, info.mtime, info.mode = len(blob), 0, 0o644
                    tar.addfile(info, io.BytesIO(blob))
                members.append({"key": key, "path": path, "width": image.width, "height": image.height,
                                "sha256": hashlib.sha256(data).hexdigest()})
        # offsets are read back from the headers tar wrote (robust to long names / pax headers)
        with tarfile.open(tmp, "r") as tar:
            where = {m.name: (m.offset_data, m.size) for m in tar.getmembers()}
        for m in members:
            m["offset"], m["nbytes"] = where[f"{m['key']}.{fmt}"]
    record = {"shard": f"{name}.tar", "bytes": tar_path.stat().st_size, "sha256": _sha256_file(tar_path),
              "members": members, "failed": failed}
    write_text_atomic(out_dir / f"{name}.json", json.dumps(record))
    return record


def _shard_done(out: Path, index: int) -> dict | None:
    """The done record of shard ``index`` when the shard file is there with the recorded size."""
    rec_path, tar_path = out / f"{shard_name(index)}.json", out / f"{shard_name(index)}.tar"
    if not rec_path.is_file() or not tar_path.is_file():
        return None
    try:
        rec = json.loads(rec_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return rec if rec.get("bytes") == tar_path.stat().st_size else None


def build_cache(
    manifests: Sequence[str | Path],
    out: str | Path,
    size: int = 256,
    fmt: Literal["png", "jpg"] = "png",
    quality: int = 95,
    shard_size: int = 1000,
    workers: int = 4,
    progress: bool = True,
    on_shard_done: Callable[[dict], None] | None = None,
) -> CacheReport:
    """Build (or resume) a cache of the images of ``manifests`` under ``out``; returns a report.

    Shards are built by ``workers`` processes (0 = in this process). Rerunning with the same
    arguments after a kill finishes the missing shards; other arguments on a non-empty
    folder are refused (the shards would mix two resolutions).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if size < 16:
        raise ValueError(f"size must be >= 16 px, got {size}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = plan_images(manifests)
    chunks = [paths[i : i + shard_size] for i in range(0, len(paths), shard_size)]
    plan = {"version": CACHE_VERSION, "size": size, "format": fmt, "quality": quality if fmt == "jpg" else None,
            "shard_size": shard_size, "images": len(paths),
            "paths_sha256": hashlib.sha256("\n".join(paths).encode()).hexdigest()}
    plan_path = out / PLAN
    if plan_path.is_file():
        old = json.loads(plan_path.read_text())
        if old != plan:
            diff = sorted(k for k in plan if old.get(k) != plan[k])
            raise ValueError(f"{out} holds a cache built with other settings or images (differs in {diff}); "
                             "use another --out or delete that folder")
    else:
        if any(out.glob("shard-*.tar")):
            raise ValueError(f"{out} holds shards but no {PLAN}: not a dermino cache, or a damaged one; "
                             "use another --out")
        write_text_atomic(plan_path, json.dumps(plan, indent=1))
    for stale in out.glob(".shard-*.tmp*.tar"):  # the shard a killed build was writing
        stale.unlink()
    (out / INDEX).unlink(missing_ok=True)

    records: dict[int, dict] = {}
    todo = []
    for i in range(len(chunks)):
        rec = _shard_done(out, i)
        if rec is None:
            todo.append(i)
        else:
            records[i] = rec
    first = [i * shard_size for i in range(len(chunks))]
    bar = tqdm(total=len(paths), initial=sum(len(chunks[i]) for i in records), unit="img",
               desc=f"cache {out.name}", disable=not progress, dynamic_ncols=True)

    def finished(i: int, rec: dict) -> None:
        records[i] = rec
        bar.update(len(chunks[i]))
        if rec["failed"]:
            for p, why in rec["failed"].items():
                log.warning("cache: cannot read %s (%s): left out", p, why)
        if on_shard_done:
            on_shard_done(rec)

    try:
        if workers <= 0 or len(todo) <= 1:
            for i in todo:
                finished(i, _build_shard(str(out), i, first[i], chunks[i], size, fmt, quality))
        else:
            with ProcessPoolExecutor(max_workers=min(workers, len(todo))) as pool:
                running = {pool.submit(_build_shard, str(out), i, first[i], chunks[i], size, fmt, quality): i
                           for i in todo}
                while running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in done:
                        finished(running.pop(fut), fut.result())
    finally:
        bar.close()

    index = {**plan, "shards": [records[i] for i in range(len(chunks))]}
    write_text_atomic(out / INDEX, json.dumps(index))
    report = verify_cache(out, checksums=False)
    report.built_shards = len(todo)
    report.seconds = time.perf_counter() - t0
    return report


# --------------------------------------------------------------------------- verifying


def _load_index(folder: Path) -> dict:
    path = folder / INDEX
    if not path.is_file():
        hint = " (the build did not finish: rerun `dermino data cache` to resume it)" if (folder / PLAN).is_file() else ""
        raise FileNotFoundError(f"no image cache at {folder}: {INDEX} is missing{hint}")
    index = json.loads(path.read_text())
    if index.get("version") != CACHE_VERSION:
        raise ValueError(f"{path}: cache version {index.get('version')}, this dermino reads {CACHE_VERSION}")
    return index


def _check_shard(folder: Path, rec: dict, checksums: bool) -> str | None:
    """What is wrong with one shard file (None when it is fine)."""
    path = folder / rec["shard"]
    if not path.is_file():
        return "missing"
    if path.stat().st_size != rec["bytes"]:
        return f"size {path.stat().st_size} bytes, expected {rec['bytes']}"
    if checksums and _sha256_file(path) != rec["sha256"]:
        return "sha256 mismatch (corrupt)"
    return None


def verify_cache(folder: str | Path, checksums: bool = True) -> CacheReport:
    """Check every shard (present, size, sha256) and that the image count adds up."""
    folder = Path(folder)
    index = _load_index(folder)
    report = CacheReport(out=folder, shards=len(index["shards"]))
    for rec in index["shards"]:
        report.failed.update(rec["failed"])
        problem = _check_shard(folder, rec, checksums)
        if problem:
            report.bad_shards[rec["shard"]] = problem
            continue
        report.images += len(rec["members"])
        report.bytes += rec["bytes"]
    stored = sum(len(r["members"]) for r in index["shards"])
    if stored + len(report.failed) != index["images"]:
        report.bad_shards[INDEX] = f"{stored} stored + {len(report.failed)} failed != {index['images']} planned"
    return report


# --------------------------------------------------------------------------- reading


class ImageCache:
    """Random-access reader: ``cache.read(original_path) -> PIL RGB image`` at the cache's size.

    Opening checks each shard's presence and size (cheap); a bad shard is logged by name and
    its images raise ``ImageReadError`` like any unreadable file. Each read checks the member's
    sha256. Safe in DataLoader workers: files are opened lazily per process and read with pread.
    """

    def __init__(self, folder: str | Path, verify: Literal["size", "full"] = "size"):
        self.folder = Path(folder)
        index = _load_index(self.folder)
        self.size, self.format, self.images = int(index["size"]), index["format"], int(index["images"])
        self.shards = [r["shard"] for r in index["shards"]]
        self.bad_shards: dict[str, str] = {}
        self.failed: dict[str, str] = {}
        self.entries: dict[str, tuple[int, int, int, str]] = {}
        for s, rec in enumerate(index["shards"]):
            self.failed.update(rec["failed"])
            problem = _check_shard(self.folder, rec, checksums=verify == "full")
            if problem:
                self.bad_shards[rec["shard"]] = problem
                log.error("image cache %s: shard %s is unusable (%s): its %d images will be skipped",
                          self.folder, rec["shard"], problem, len(rec["members"]))
            for m in rec["members"]:
                self.entries[m["path"]] = (s, int(m["offset"]), int(m["nbytes"]), m["sha256"])
        self.identity = hashlib.sha256((self.folder / INDEX).read_bytes()).hexdigest()[:16]
        self._fds: dict[int, int] = {}
        self._pid = os.getpid()

    def __contains__(self, path: str | Path) -> bool:
        return os.path.abspath(path) in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def missing(self, paths: Iterable[str | Path]) -> list[str]:
        """Paths that the cache neither stores nor recorded as unreadable at build time."""
        return [str(p) for p in paths if os.path.abspath(p) not in self.entries and os.path.abspath(p) not in self.failed]

    def _fd(self, shard: int) -> int:
        if os.getpid() != self._pid:  # forked DataLoader worker: descriptors are per process
            self._fds, self._pid = {}, os.getpid()
        if shard not in self._fds:
            self._fds[shard] = os.open(self.folder / self.shards[shard], os.O_RDONLY)
        return self._fds[shard]

    def read_bytes(self, path: str | Path) -> bytes:
        key = os.path.abspath(path)
        if key not in self.entries:
            reason = self.failed.get(key)
            raise ImageReadError(path, f"unreadable when the cache was built ({reason})" if reason
                                 else f"not in the image cache {self.folder}")
        shard, offset, nbytes, sha = self.entries[key]
        name = self.shards[shard]
        if name in self.bad_shards:
            raise ImageReadError(path, f"cache shard {self.folder / name} is unusable ({self.bad_shards[name]})")
        data = os.pread(self._fd(shard), nbytes, offset)
        if len(data) != nbytes or hashlib.sha256(data).hexdigest() != sha:
            raise ImageReadError(path, f"corrupt entry in cache shard {self.folder / name} (sha256 mismatch)")
        return data

    def read(self, path: str | Path) -> Image.Image:
        data = self.read_bytes(path)
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                return im.convert("RGB")
        except Exception as exc:  # a decodable-looking member that PIL rejects: name the shard
            raise ImageReadError(path, f"cannot decode cached copy ({type(exc).__name__}: {exc})") from exc

    __call__ = read

    def __getstate__(self) -> dict:  # pickled to spawn-started workers without open descriptors
        state = dict(self.__dict__)
        state["_fds"] = {}
        return state

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}

    def __del__(self) -> None:
        if getattr(self, "_pid", None) == os.getpid():
            self.close()


def open_for_rows(folder: str | Path, paths: Sequence[str | Path], what: str = "manifest") -> ImageCache:
    """Open a cache for loading ``paths``; fail naming the first rows the cache lacks."""
    cache = ImageCache(folder)
    missing = cache.missing(paths)
    if missing:
        raise ValueError(
            f"image cache {folder} lacks {len(missing)} of the {len(paths)} {what} images, e.g. "
            f"{missing[:3]}: rebuild it with `dermino data cache` over the same manifests"
        )
    return cache


def cache_summary(report: CacheReport) -> str:
    mb = report.bytes / 2**20
    line = (f"{report.out}: {report.images} images in {report.shards} shards ({mb:.1f} MiB)"
            + (f", {report.built_shards} built now" if report.built_shards else "")
            + (f" in {report.seconds:.1f} s" if report.seconds else ""))
    if report.failed:
        line += f"; {len(report.failed)} unreadable original(s) left out"
    if report.bad_shards:
        line += "; BAD: " + ", ".join(f"{k} ({v})" for k, v in report.bad_shards.items())
    return line


def manifest_paths(df: pd.DataFrame) -> list[str]:
    """Absolute image paths of a manifest's rows (the cache's keys)."""
    return [os.path.abspath(resolve(df, v) or "") for v in df["image"]]
