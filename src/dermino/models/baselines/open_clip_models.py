"""open_clip comparators: CLIP, SigLIP, BiomedCLIP, MONET, DermLIP, MAKE, and any ``open_clip:<arch>``.

Each named model is the whole open_clip model (image and text towers), so its published
checkpoint loads with every key placed; ``forward_features`` returns the image tower's
pooled feature before the joint projection (``cls``), its final tokens (``patch``) and the
joint image-text embedding its own zero-shot / retrieval uses (``proj``, the default pool).
The text tower (models/text.py) uses open_clip's CLIP BPE tokenizer, which ships inside the
open_clip package and so works offline; models whose tokenizer is a Hugging Face download
(SigLIP's SentencePiece, BiomedCLIP's PubMedBERT vocabulary) have no text tower offline,
and their card says so instead of faking one.

Published layouts: open_clip's own state dict (``visual.*``, ``transformer.*`` / ``text.*``,
``logit_scale``) as in open_clip ``pretrained.py`` hub files and in training checkpoints
(``{"state_dict": {"module.visual..."}}``, unwrapped by ``models.weights``); OpenAI-format
files (MONET's ``weight_clip.pt``) use the same names; OpenAI's TorchScript ``ViT-B-16.pt``
archive is code, not data, and is refused (use the hub's ``open_clip_model.safetensors``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dermino.models.baselines.common import Card, load_plain, no_masks, register_baseline, tokens_to_map
from dermino.models.preprocess import HALF, IMAGENET_MEAN, IMAGENET_STD, OPENAI_MEAN, OPENAI_STD, Preprocess
from dermino.models.registry import register_prefix

# keys OpenAI's original checkpoints carry beside the weights (open_clip's
# build_model_from_openai_state_dict drops them too)
_OPENAI_EXTRA = ("input_resolution", "context_length", "vocab_size")


class OpenCLIPVisual(nn.Module):
    """open_clip image tower; ``weights`` for open_clip are given to create_model as ``pretrained``."""

    def __init__(self, arch: str, pretrained: str | None = None):
        super().__init__()
        import open_clip

        clip = open_clip.create_model(arch, pretrained=pretrained)
        self.visual = clip.visual
        self.name = arch
        self.embed_dim = int(getattr(self.visual, "output_dim", 0) or clip.text_projection.shape[-1])
        self.mean = tuple(getattr(self.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
        self.std = tuple(getattr(self.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
        ps = getattr(self.visual, "patch_size", None)
        self.patch_size = (ps[0] if isinstance(ps, tuple) else ps) if ps is not None else None
        if hasattr(self.visual, "output_tokens"):
            self.visual.output_tokens = True

    def forward_features(self, x: Tensor, masks: Tensor | None = None) -> dict[str, Tensor]:
        no_masks(masks, f"open_clip:{self.name}")
        out = self.visual(x)
        pooled, tokens = out if isinstance(out, tuple) else (out, out[:, None])
        return {"cls": pooled, "patch": tokens}

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)["cls"]

    def get_intermediate_layers(self, x: Tensor, indices: Sequence[int]) -> list[Tensor]:
        raise NotImplementedError("open_clip towers expose no intermediate layers here")

    def load_checkpoint(self, sd: dict[str, Tensor]) -> tuple[list, list, list]:
        """A whole CLIP state dict (keep its ``visual.*`` part) or the image tower's own."""
        if any(k.startswith("visual.") for k in sd):
            text_side = [k for k in sd if not k.startswith("visual.")]
            sd = {k.removeprefix("visual."): v for k, v in sd.items() if k.startswith("visual.")}
            missing, unexpected, _ = load_plain(self.visual, sd, ())
            return missing, unexpected, text_side
        return load_plain(self.visual, sd, ())


if importlib.util.find_spec("open_clip") is not None:

    @register_prefix("open_clip")
    def _open_clip(arch: str, pretrained: str | None = None) -> OpenCLIPVisual:
        return OpenCLIPVisual(arch, pretrained)


class OpenCLIPTextTower:
    """The ``TextTower`` of an open_clip model: its tokenizer, prompt template and temperature.

    A plain object (not a module) that holds the owning model, so the text weights appear
    once in the backbone's state dict.
    """

    def __init__(self, owner: OpenCLIPBaseline, tokenizer: Any, template: str):
        self._owner = owner
        self.tokenizer = tokenizer
        self.template = template

    @property
    def logit_scale(self) -> float:
        return float(self._owner.clip.logit_scale.detach().exp().item())

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> Tensor:
        clip = self._owner.clip
        tokens = self.tokenizer(list(texts)).to(next(clip.parameters()).device)
        return clip.encode_text(tokens, normalize=True).float()


class OpenCLIPBaseline(nn.Module):
    """A whole open_clip model behind the dermino backbone API, with its own preprocessing.

    ``vision`` / ``text`` update the library's config (tests build the same code small);
    ``image_only`` builds just the image tower (its text tower cannot be built offline), and
    a full checkpoint's other keys are then reported as ignored.
    """

    def __init__(self, arch: str, preprocess: Preprocess, *, quick_gelu: bool = False, template: str = "",
                 text_tower: bool = True, img_size: int | None = None, vision: dict | None = None,
                 text: dict | None = None, visual_factory: Any = None):
        super().__init__()
        import open_clip

        self.name = arch
        self.preprocess = preprocess
        self.mean, self.std = preprocess.mean, preprocess.std
        if visual_factory is not None:  # image tower only (BiomedCLIP: no offline text config)
            self.clip = nn.Module()
            self.clip.visual = visual_factory()
            self.image_only = True
        else:
            cfg = open_clip.get_model_config(arch)
            kwargs: dict[str, Any] = {}
            if img_size is not None and "timm_model_name" not in cfg["vision_cfg"]:
                vision = {**(vision or {}), "image_size": img_size}
            if vision:
                kwargs["vision_cfg"] = {**cfg["vision_cfg"], **vision}
            if text:
                kwargs["text_cfg"] = {**cfg["text_cfg"], **text}
            self.clip = open_clip.create_model(arch, pretrained=None, force_quick_gelu=quick_gelu, **kwargs)
            self.image_only = False
        visual = self.clip.visual
        if img_size is not None and hasattr(visual, "trunk"):  # timm trunk: resample its position table
            visual.set_input_size(img_size)
        self._timm = hasattr(visual, "trunk")
        if self._timm:
            trunk = visual.trunk
            self.embed_dim = int(trunk.num_features)
            self.patch_size = int(trunk.patch_embed.patch_size[0])
            self._prefix = int(getattr(trunk, "num_prefix_tokens", 0))
        else:
            self.embed_dim = int(visual.transformer.width)
            self.patch_size = int(visual.patch_size[0])
        self.text_tower = (
            OpenCLIPTextTower(self, open_clip.get_tokenizer(arch), template)
            if text_tower and not self.image_only else None
        )

    def forward_features(self, x: Tensor, masks: Tensor | None = None) -> dict[str, Tensor]:
        no_masks(masks, self.name)
        visual = self.clip.visual
        if self._timm:  # open_clip TimmModel.forward = head(trunk(x)), split at the pooled feature
            tokens = visual.trunk.forward_features(x)
            pooled = visual.trunk.forward_head(tokens, pre_logits=True)
            return {"cls": pooled, "patch": tokens[:, self._prefix:], "proj": visual.head(pooled)}
        out = visual.forward_intermediates(x, indices=1, normalize_intermediates=True, output_fmt="NLC",
                                           output_extra_tokens=True)
        return {"cls": out["image_intermediates_prefix"][-1][:, 0], "patch": out["image_intermediates"][-1],
                "proj": out["image_features"]}

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)["cls"]

    def get_intermediate_layers(self, x: Tensor, indices: Sequence[int]) -> list[Tensor]:
        visual = self.clip.visual
        if self._timm:
            return list(visual.trunk.forward_intermediates(x, indices=list(indices), intermediates_only=True))
        out = visual.forward_intermediates(x, indices=list(indices), intermediates_only=True, output_fmt="NLC")
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        return [tokens_to_map(t, h, w) for t in out["image_intermediates"]]

    def load_checkpoint(self, sd: dict[str, Tensor]) -> tuple[list, list, list]:
        ignored = [k for k in sd if k in _OPENAI_EXTRA]
        sd = {k: v for k, v in sd.items() if k not in _OPENAI_EXTRA}
        if self.image_only:
            ignored += [k for k in sd if not k.startswith("visual.")]
            sd = {k: v for k, v in sd.items() if k.startswith("visual.")}
        missing, unexpected, _ = load_plain(self.clip, sd, ())
        return missing, unexpected, ignored


def _b16_tiny() -> dict:
    return {"img_size": 32, "vision": {"layers": 2}, "text": {"layers": 2}}


# open_clip transform.image_transform(is_train=False): Resize(shortest, bicubic) + CenterCrop,
# with the pretrained tag's mean/std/resize_mode (open_clip pretrained.py)
CLIP_PREPROCESS = Preprocess(224, 224, "shortest", "bicubic", OPENAI_MEAN, OPENAI_STD, "proj",
                             "open_clip image_transform with get_pretrained_cfg('ViT-B-16', 'openai')")
SIGLIP_PREPROCESS = Preprocess(224, 224, "squash", "bicubic", HALF, HALF, "proj",
                               "open_clip image_transform with get_pretrained_cfg('ViT-B-16-SigLIP', 'webli')")
# suinleelab/MONET README get_transform(224): Resize(224, bicubic), CenterCrop, ImageNet mean/std
MONET_PREPROCESS = Preprocess(224, 224, "shortest", "bicubic", IMAGENET_MEAN, IMAGENET_STD, "proj",
                              "suinleelab/MONET README get_transform")


@register_baseline(Card(
    name="clip_vit_b16", family="CLIP", library="open_clip", arch="ViT-B-16 (QuickGELU, OpenAI)",
    hub_id="timm/vit_base_patch16_clip_224.openai (open_clip 'ViT-B-16', pretrained='openai')",
    download="https://huggingface.co/timm/vit_base_patch16_clip_224.openai",
    files=("open_clip_model.safetensors",), licence="MIT (OpenAI CLIP)",
    paper="Radford et al. 2021; DermINO Supplementary Table 1", text_tower=True, preprocess=CLIP_PREPROCESS,
    text_note="open_clip CLIP BPE tokenizer (in the package); template 'a photo of {}.'",
    note="OpenAI's own ViT-B-16.pt is a TorchScript archive (code) and is not read; the hub file has the same weights",
), tiny=_b16_tiny())
def clip_vit_b16(**kw) -> OpenCLIPBaseline:
    return OpenCLIPBaseline("ViT-B-16", CLIP_PREPROCESS, quick_gelu=True, template="a photo of {}.", **kw)


@register_baseline(Card(
    name="siglip_vit_b16", family="SigLIP", library="open_clip", arch="ViT-B-16-SigLIP (timm vit_base_patch16_siglip_224)",
    hub_id="timm/ViT-B-16-SigLIP (open_clip 'ViT-B-16-SigLIP', pretrained='webli')",
    download="https://huggingface.co/timm/ViT-B-16-SigLIP", files=("open_clip_model.safetensors",),
    licence="Apache-2.0", paper="Zhai et al. 2023, SigLIP; DermINO Supplementary Table 1", text_tower=False,
    preprocess=SIGLIP_PREPROCESS,
    text_note="the text tower is built and loaded, but its SentencePiece tokenizer (timm/ViT-B-16-SigLIP) is a "
              "Hugging Face download, not shipped in an installed package: no offline text tower",
), tiny={"img_size": 32, "text": {"layers": 2}})
def siglip_vit_b16(**kw) -> OpenCLIPBaseline:
    return OpenCLIPBaseline("ViT-B-16-SigLIP", SIGLIP_PREPROCESS, text_tower=False, **kw)


def _biomedclip_visual() -> nn.Module:
    # microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224 open_clip_config.json: embed_dim 512,
    # vision_cfg {timm_model_name: vit_base_patch16_224, timm_pool: "", timm_proj: "linear"}
    from open_clip.timm_model import TimmModel

    return TimmModel("vit_base_patch16_224", embed_dim=512, image_size=224, pool="", proj="linear")


BIOMEDCLIP_PREPROCESS = Preprocess(224, 224, "shortest", "bicubic", OPENAI_MEAN, OPENAI_STD, "proj",
                                   "open_clip image_transform with the hub's preprocess_cfg (OpenAI mean/std)")


@register_baseline(Card(
    name="biomedclip", family="BiomedCLIP", library="open_clip",
    arch="open_clip TimmModel(vit_base_patch16_224, proj linear 512) + PubMedBERT text",
    hub_id="hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
    download="https://huggingface.co/microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
    files=("open_clip_pytorch_model.bin",), licence="MIT", paper="Zhang et al. 2023, BiomedCLIP; DermINO Suppl. Table 1",
    preprocess=BIOMEDCLIP_PREPROCESS,
    text_tower=False,
    text_note="the PubMedBERT text tower needs the Hugging Face config and vocabulary of "
              "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract (a download): image tower only offline; "
              "the file's text.* keys and logit_scale are reported as ignored",
), tiny={"img_size": 32})
def biomedclip(**kw) -> OpenCLIPBaseline:
    return OpenCLIPBaseline("biomedclip", BIOMEDCLIP_PREPROCESS, visual_factory=_biomedclip_visual,
                            text_tower=False, **kw)


@register_baseline(Card(
    name="monet", family="MONET", library="open_clip", arch="ViT-L-14 (QuickGELU, OpenAI CLIP layout)",
    hub_id="suinleelab/monet (transformers CLIPModel copy)",
    download="https://aimslab.cs.washington.edu/MONET/weight_clip.pt", files=("weight_clip.pt",),
    licence="see suinleelab/MONET", paper="Kim et al. 2024, Nature Medicine (MONET)", text_tower=True,
    preprocess=MONET_PREPROCESS,
    text_note="open_clip CLIP BPE tokenizer (same vocabulary as OpenAI CLIP); template 'This is skin image of {}'",
    note="weight_clip.pt is an OpenAI-CLIP state dict (loaded by MONET into clip.load('ViT-L/14')); "
         "open_clip's ViT-L-14 with QuickGELU has the same keys",
), tiny={"img_size": 28, "vision": {"layers": 2}, "text": {"layers": 2}})
def monet(**kw) -> OpenCLIPBaseline:
    return OpenCLIPBaseline("ViT-L-14", MONET_PREPROCESS, quick_gelu=True, template="This is skin image of {}",
                            **kw)


DERMLIP_PREPROCESS = Preprocess(224, 224, "shortest", "bicubic", OPENAI_MEAN, OPENAI_STD, "proj",
                                "open_clip image_transform for 'ViT-B-16' (hub open_clip_config.json)")


@register_baseline(Card(
    name="dermlip_vit_b16", family="DermLIP", library="open_clip", arch="ViT-B-16",
    hub_id="hf-hub:redlessone/DermLIP_ViT-B-16", download="https://huggingface.co/redlessone/DermLIP_ViT-B-16",
    files=("open_clip_model.safetensors",), licence="CC BY-NC-ND 4.0 (model card)",
    paper="Yan et al. 2025, Derm1M (DermLIP)", text_tower=True, preprocess=DERMLIP_PREPROCESS,
    text_note="open_clip CLIP BPE tokenizer; template 'This is a skin image of {}' (model card)",
    note="the PanDerm-base + PubMedBERT DermLIP variant needs a Hugging Face text config: not registered",
), tiny=_b16_tiny())
def dermlip_vit_b16(**kw) -> OpenCLIPBaseline:
    return OpenCLIPBaseline("ViT-B-16", DERMLIP_PREPROCESS, template="This is a skin image of {}", **kw)


@register_baseline(Card(
    name="make_vit_b16", family="MAKE", library="open_clip", arch="ViT-B-16",
    hub_id="hf-hub:xieji-x/MAKE", download="https://huggingface.co/xieji-x/MAKE (or MAKE.pt, SiyuanYan1/MAKE)",
    files=("open_clip_model.safetensors", "MAKE.pt"), licence="MIT (SiyuanYan1/MAKE repository)",
    paper="Yan et al. 2025, MICCAI (MAKE)", text_tower=True, preprocess=DERMLIP_PREPROCESS,
    text_note="open_clip CLIP BPE tokenizer; template 'This is a skin image of {}' (DermLIP's, same authors; "
              "MAKE's own zero-shot prompts come from its data/*.csv files)",
    note="MAKE.pt is an open_clip training checkpoint ({'state_dict': {'module.…'}}), unwrapped on load",
), tiny=_b16_tiny())
def make_vit_b16(**kw) -> OpenCLIPBaseline:
    return OpenCLIPBaseline("ViT-B-16", DERMLIP_PREPROCESS, template="This is a skin image of {}", **kw)
