"""Load, convert and export backbone weights.

Formats ``load_weights`` understands (detected from the keys, not the file name):

* dermino checkpoints: ``vit.*`` + ``mask_token`` (a ViTBackbone's own state dict), possibly
  nested under ``teacher`` / ``student`` / ``model`` / ``state_dict`` and prefixed with
  ``backbone.`` / ``module.`` / ``_orig_mod.`` (heads beside the backbone are ignored);
* DINOv2 official (torch hub ``dinov2_vit{s,b,l}14[_reg4]``): ``cls_token``, ``pos_embed``
  (518 px, 37x37 grid), ``register_tokens``, ``mask_token``, ``blocks.N.*``, ``norm.*``;
* timm ``VisionTransformer`` state dicts, including dermino exports (``export_backbone``).

Files: ``.safetensors`` or anything ``torch.load`` reads with ``weights_only=True``. Position
embeddings are resampled to the model's grid with timm's own ``checkpoint_filter_fn``, which
also folds DINOv2's register layout into timm's. Loading is strict for backbone parameters:
a missing or unexpected key raises ``WeightsError`` listing them; the mask token may be
missing (timm checkpoints have none) and classifier heads are dropped; both are reported.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import checkpoint_filter_fn
from torch import Tensor, nn

from dermino.files import load_safetensors
from dermino.models.backbone import ViTBackbone, ViTSpec

log = logging.getLogger(__name__)

DINOV2_URLS = {
    f"dinov2_vit{s}14{reg}": f"https://dl.fbaipublicfiles.com/dinov2/dinov2_vit{s}14/dinov2_vit{s}14{reg}_pretrain.pth"
    for s in ("s", "b", "l", "g")
    for reg in ("", "_reg4")
}
_NESTING = ("teacher", "model", "state_dict", "student", "module")
_PREFIXES = ("module.", "_orig_mod.", "backbone.", "model.", "encoder.")
_CLASSIFIER_PREFIXES = ("head.", "fc_norm.", "head_drop.", "pre_logits.")


class WeightsError(RuntimeError):
    """A checkpoint that does not fit the model; the message names the file and the keys."""


@dataclass
class LoadReport:
    """What ``load_weights`` did: detected format, keys it could not place, keys it dropped."""

    source: str
    format: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    resampled_pos_embed: bool = False

    def __str__(self) -> str:
        parts = [f"{self.source}: {self.format} format"]
        for name in ("missing", "unexpected", "ignored"):
            keys = getattr(self, name)
            if keys:
                shown = ", ".join(keys[:12]) + (f" ... (+{len(keys) - 12})" if len(keys) > 12 else "")
                parts.append(f"{len(keys)} {name}: {shown}")
        if self.resampled_pos_embed:
            parts.append("position embeddings resampled to the model grid")
        return "; ".join(parts)


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a checkpoint file, with training-checkpoint nesting removed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors" or _is_safetensors(path):  # MedImageInsight ships safetensors as .pt
        return load_safetensors(path, "checkpoint")
    if _is_torchscript(path):  # torch.load would hand it to torch.jit.load: code, not data
        raise WeightsError(f"{path} is a TorchScript archive (code, e.g. OpenAI's CLIP .pt files); "
                           "use the publisher's state-dict file (open_clip / Hugging Face hub) instead")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle with arbitrary objects, truncated file, ...
        raise WeightsError(f"cannot read checkpoint {path}: {e}") from e
    return unwrap_state_dict(obj, str(path))


def _is_safetensors(path: Path) -> bool:
    """A safetensors file whatever its name: 8-byte little-endian header length, then a JSON object."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= path.stat().st_size - 8


def _is_torchscript(path: Path) -> bool:
    """A zip checkpoint holding compiled code (``*/code/`` or ``constants.pkl``): TorchScript."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in n or n.endswith("/constants.pkl") for n in z.namelist())


def unwrap_state_dict(obj: object, source: str = "<state dict>") -> dict[str, Tensor]:
    """Descend through ``teacher``/``model``/``state_dict``... until a flat dict of tensors."""
    while isinstance(obj, Mapping) and not any(isinstance(v, Tensor) for v in obj.values()):
        key = next((k for k in _NESTING if k in obj), None)
        if key is None:
            raise WeightsError(f"{source}: no tensors at the top level and none of the keys {_NESTING}")
        obj = obj[key]
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{source}: expected a dict of tensors, got {type(obj).__name__}")
    return {k: v for k, v in obj.items() if isinstance(v, Tensor)}


def _strip_prefixes(sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Drop wrapper prefixes; when some keys sit under ``backbone.``, keep only those."""
    ignored: list[str] = []
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            inside = [k for k in sd if k.startswith(prefix)]
            if inside and (len(inside) == len(sd) or prefix == "backbone."):
                ignored += [k for k in sd if not k.startswith(prefix)]
                sd = {k[len(prefix) :]: sd[k] for k in inside}
                changed = True
    return sd, ignored


def detect_format(sd: Mapping[str, Tensor]) -> str:
    if any(k.startswith("vit.") for k in sd):
        return "dermino"
    if "register_tokens" in sd or "mask_token" in sd:
        return "dinov2"
    if "cls_token" in sd or any(k.startswith("blocks.") for k in sd):
        return "timm"
    return "unknown"


def _load_vit(model: ViTBackbone, sd: dict[str, Tensor], report: LoadReport) -> None:
    fmt = detect_format(sd)
    report.format = fmt
    sd = dict(sd)
    if fmt == "dermino":
        report.ignored += [k for k in sd if not k.startswith("vit.") and k != "mask_token"]
        mask = sd.pop("mask_token", None)
        vit_sd = {k[4:]: v for k, v in sd.items() if k.startswith("vit.")}
    else:
        mask = sd.get("mask_token")
        # DINOv2 training checkpoints (FSDP) group blocks in chunks: blocks.<chunk>.<i>.*
        vit_sd = {re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k): v for k, v in sd.items()}
    old_pos = vit_sd.get("pos_embed")
    # timm converts DINOv2 keys (it recognises them by mask_token) and resamples pos_embed.
    vit_sd = checkpoint_filter_fn(vit_sd, model.vit)
    vit_sd.pop("mask_token", None)
    new_pos = vit_sd.get("pos_embed")
    report.resampled_pos_embed = (
        old_pos is not None and new_pos is not None and old_pos.shape != new_pos.shape
    )
    for k in list(vit_sd):
        if k.startswith(_CLASSIFIER_PREFIXES) and k not in model.vit.state_dict():
            report.ignored.append(k)
            del vit_sd[k]
    own = model.vit.state_dict()
    shape_errors = [
        f"{k} {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in vit_sd.items()
        if k in own and own[k].shape != v.shape
    ]
    if shape_errors:
        raise WeightsError(f"{report.source}: shape mismatch: " + "; ".join(shape_errors[:8]))
    result = model.vit.load_state_dict(vit_sd, strict=False)
    report.missing += [f"vit.{k}" for k in result.missing_keys]
    report.unexpected += list(result.unexpected_keys)
    if mask is None:
        report.ignored.append("mask_token (absent; kept at its initial value)")
    else:
        if mask.numel() != model.mask_token.numel():
            raise WeightsError(
                f"{report.source}: mask_token has {mask.numel()} values, model {model.mask_token.numel()}"
            )
        with torch.no_grad():
            model.mask_token.copy_(mask.reshape(model.mask_token.shape))


def checkpoint_grid(sd: Mapping[str, Tensor]) -> int | None:
    """Side of the square patch grid a ViT checkpoint's position embeddings were trained at.

    Handles embeddings with or without a class-token slot (DINOv2/timm vs register layouts);
    ``None`` when the checkpoint has no (square) ``pos_embed``.
    """
    key = next((k for k in sd if k == "pos_embed" or k.endswith(".pos_embed")), None)
    if key is None or sd[key].ndim != 3:
        return None
    n = sd[key].shape[1]
    for tokens in (n - 1, n):
        side = math.isqrt(max(tokens, 0))
        if side > 0 and side * side == tokens:
            return side
    return None


def load_weights(
    model: nn.Module,
    path: str | Path | Mapping[str, Tensor],
    strict: bool = True,
    source: str | None = None,
) -> LoadReport:
    """Load a checkpoint file (or an in-memory state dict) into ``model``; returns a LoadReport.

    ViTBackbones get format detection and position-embedding resampling; other backbones
    (baselines) load through their own ``load_checkpoint(state_dict, strict)`` if they have
    one, else ``load_state_dict``. With ``strict`` any missing/unexpected backbone key raises.
    """
    source = source or (str(path) if not isinstance(path, Mapping) else "<state dict>")
    sd = read_state_dict(path) if not isinstance(path, Mapping) else unwrap_state_dict(path)
    sd, ignored = _strip_prefixes(sd)
    report = LoadReport(source=source, format=detect_format(sd), ignored=ignored)
    if isinstance(model, ViTBackbone):
        _load_vit(model, sd, report)
    elif hasattr(model, "load_checkpoint"):
        report.format = type(model).__name__
        missing, unexpected, dropped = model.load_checkpoint(sd)
        report.missing, report.unexpected = list(missing), list(unexpected)
        report.ignored += list(dropped)
    else:
        result = model.load_state_dict(sd, strict=False)
        report.missing, report.unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if strict and (report.missing or report.unexpected):
        raise WeightsError(f"checkpoint does not match the model: {report}")
    log.info("loaded weights: %s", report)
    return report


def load_dinov2_hub(model: nn.Module, name: str, strict: bool = True) -> LoadReport:
    """Download the official DINOv2 weights (``dinov2_vitb14`` ...) via torch.hub and load them.

    Needs internet the first time; the file lands in the torch hub cache (``checkpoints/``).
    The cached file is read like every other checkpoint, data only (``weights_only=True``):
    ``torch.hub.load_state_dict_from_url`` unpickles by default, so a file planted in the
    cache under the expected name could otherwise run code.
    """
    if name not in DINOV2_URLS:
        raise KeyError(f"unknown DINOv2 checkpoint {name!r}; known: {', '.join(sorted(DINOV2_URLS))}")
    return load_weights(model, read_state_dict(hub_file(DINOV2_URLS[name])), strict=strict)


def hub_file(url: str) -> Path:
    """The torch hub cache's copy of ``url`` (``<hub dir>/checkpoints/<file name>``), downloaded when absent."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), progress=True)
    return path


def to_dinov2_state_dict(model: ViTBackbone) -> dict[str, Tensor]:
    """The inverse mapping: our backbone as a DINOv2-official state dict (pos_embed at our grid)."""
    out: dict[str, Tensor] = {}
    for k, v in model.vit.state_dict().items():
        if k == "reg_token":
            out["register_tokens"] = v.clone()
        else:
            out[k] = v.clone()
    if model.vit.no_embed_class:
        # DINOv2 adds a position embedding to the class token; ours is folded into cls_token,
        # so a zero entry reproduces the same sum.
        pos = out["pos_embed"]
        out["pos_embed"] = torch.cat([pos.new_zeros(1, 1, pos.shape[-1]), pos], dim=1)
    out["mask_token"] = model.mask_token.detach().clone()
    return out


def export_dinov2(model: ViTBackbone, path: str | Path) -> Path:
    """Write the backbone as the official DINOv2 torch-hub checkpoint (``dinov2_vit*14[_reg4]_pretrain.pth``).

    Key names as in facebookresearch/dinov2 (``cls_token``, ``pos_embed`` at the model's own grid
    with the class-token slot, ``register_tokens``, ``mask_token``, ``blocks.N.*``, ``norm.*``), so
    whatever reads those files (dinov2's hub loader, ``load_weights``, ``model.init_weights=``)
    reads this one. ``.safetensors`` paths get the same tensors as safetensors. Written to a
    temporary name and renamed: an interrupted export never leaves half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in to_dinov2_state_dict(model).items()}
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".safetensors":
        save_file(sd, str(tmp))
    else:
        torch.save(sd, tmp)
    tmp.replace(path)
    return path


def _timm_config(model: ViTBackbone) -> dict:
    spec = model.spec
    base = {384: "small", 768: "base", 1024: "large"}.get(spec.embed_dim, "small")
    arch = f"vit_{base}_patch14_{'reg4_' if spec.num_register_tokens else ''}dinov2"
    size = spec.img_size if isinstance(spec.img_size, int) else spec.img_size[0]
    model_args = {
        "img_size": spec.img_size,
        "patch_size": spec.patch_size,
        "embed_dim": spec.embed_dim,
        "depth": spec.depth,
        "num_heads": spec.num_heads,
        "mlp_ratio": spec.mlp_ratio,
        "init_values": spec.layerscale_init,
        "reg_tokens": spec.num_register_tokens,
        "no_embed_class": bool(model.vit.no_embed_class),
        "class_token": True,
        "global_pool": "token",
        "num_classes": 0,
        "dynamic_img_size": True,
        **spec.extra,
    }
    return {
        "architecture": arch,
        "num_classes": 0,
        "num_features": spec.embed_dim,
        "global_pool": "token",
        "model_args": model_args,
        "pretrained_cfg": {
            "input_size": [3, size, size],
            "mean": list(model.mean),
            "std": list(model.std),
            "crop_pct": 1.0,
            "interpolation": "bicubic",
            "num_classes": 0,
        },
        "dermino": {"spec": asdict(spec)},
    }


def export_backbone(model: ViTBackbone, out_dir: str | Path) -> Path:
    """Write ``model.safetensors`` + ``config.json`` that timm loads as a plain VisionTransformer.

    ``timm.create_model(cfg["architecture"], pretrained=False, **cfg["model_args"])`` then
    ``load_state_dict`` reproduces our CLS features; so does ``timm.create_model("local-dir:<dir>",
    pretrained=True)``. The mask token (not part of timm's model) goes to ``extras.safetensors``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous().clone() for k, v in model.vit.state_dict().items()}
    save_file(sd, str(out / "model.safetensors"))
    save_file({"mask_token": model.mask_token.detach().contiguous().clone()}, str(out / "extras.safetensors"))
    (out / "config.json").write_text(json.dumps(_timm_config(model), indent=2))
    return out


def load_exported(out_dir: str | Path) -> ViTBackbone:
    """Rebuild a ViTBackbone from an ``export_backbone`` folder (strict)."""
    out = Path(out_dir)
    cfg_path = out / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"no config.json in {out}")
    cfg = json.loads(cfg_path.read_text())
    if "dermino" not in cfg:
        raise WeightsError(f"{cfg_path} was not written by dermino.export_backbone (no 'dermino' entry)")
    model = ViTBackbone(ViTSpec(**cfg["dermino"]["spec"]))
    sd = read_state_dict(out / "model.safetensors")
    extras = out / "extras.safetensors"
    if extras.is_file():
        sd.update(load_safetensors(extras, "checkpoint extras"))
    load_weights(model, sd, strict=True)
    return model


def timm_from_export(out_dir: str | Path) -> nn.Module:
    """The exported backbone as a plain timm model (for users outside dermino)."""
    return timm.create_model(f"local-dir:{Path(out_dir).resolve()}", pretrained=True)
