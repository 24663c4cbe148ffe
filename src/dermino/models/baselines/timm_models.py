"""timm-built comparators: any ``timm:<name>``, supervised ViT-B/16, DINOv3 ViT-S/B/L/16, PanDerm.

* ``vit_base_patch16_224``: timm's supervised ViT-B/16 (``augreg2_in21k_ft_in1k``), the
  DermINO paper's "supervised ViT-Base"; its file is timm's own ``model.safetensors``.
* ``dinov3_vit{s,b,l}16``: timm's DINOv3 port (timm/models/eva.py, ``*_dinov3_qkvb``) with
  CLS pooling as upstream; Meta's ``dinov3_vit*16_pretrain_lvd1689m-*.pth`` files are converted
  by timm's own ``eva.checkpoint_filter_fn`` (``storage_tokens`` -> ``reg_token``, ``ls1.gamma``
  -> ``gamma_1``, ``qkv.bias`` -> ``q_bias``/``v_bias``; the fixed zero k-bias, its
  ``bias_mask``, RoPE ``periods`` and the pretraining ``mask_token`` are reported as ignored).
  Every DINOv3 ViT is published with 4 register ("storage") tokens; there is no variant without.
* ``panderm_vit_{l,b}16``: PanDerm (SiyuanYan1/PanDerm classification/models/modeling_finetune.py)
  is a CAE-style ViT: qkv without bias plus ``q_bias``/``v_bias``, layer scale ``gamma_1``/``gamma_2``,
  a fixed 2-D sin-cos ``pos_embed`` stored in the file, CLS token after the final norm. timm's
  BEiT has exactly these modules and names, so it is built as ``timm`` ``Beit`` with absolute
  position embeddings and no relative bias; the published file's ``encoder.`` prefix is removed
  and the pretraining parts beside the encoder (decoder, teacher) are reported as ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import timm
import torch
from torch import Tensor, nn

from dermino.models.baselines.common import Card, load_plain, no_masks, register_baseline
from dermino.models.preprocess import HALF, IMAGENET_MEAN, IMAGENET_STD, Preprocess, crop_pct
from dermino.models.registry import register_prefix

Converter = Callable[[dict[str, Tensor], nn.Module], tuple[dict[str, Tensor], list[str]]]


class TimmBackbone(nn.Module):
    """Any timm model behind the dermino API (no classifier: ``num_classes=0``).

    ``convert`` maps a published file's keys to timm's (returns the new dict and the keys
    it deliberately dropped, which the load report lists as ignored).
    """

    def __init__(self, model_name: str, preprocess: Preprocess | None = None, convert: Converter | None = None,
                 **kwargs):
        super().__init__()
        if not model_name:
            raise ValueError("timm backbone needs a model name, e.g. 'timm:vit_small_patch16_224'")
        self.model = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)
        self.name = model_name
        self.embed_dim = self.model.num_features
        cfg = self.model.pretrained_cfg or {}
        self.mean = tuple(cfg.get("mean", IMAGENET_MEAN))
        self.std = tuple(cfg.get("std", IMAGENET_STD))
        if preprocess is not None:
            self.preprocess = preprocess
            self.mean, self.std = preprocess.mean, preprocess.std
        self._convert = convert
        pe = getattr(self.model, "patch_embed", None)
        ps = getattr(pe, "patch_size", None)
        self.patch_size = (ps[0] if isinstance(ps, tuple) else ps) if ps is not None else None
        self.num_prefix_tokens = getattr(self.model, "num_prefix_tokens", 0)

    def forward_features(self, x: Tensor, masks: Tensor | None = None) -> dict[str, Tensor]:
        no_masks(masks, f"timm:{self.name}")
        feats = self.model.forward_features(x)
        pooled = self.model.forward_head(feats, pre_logits=True)
        if feats.ndim == 4:  # CNN: (B, C, H, W), or NHWC for some families
            patch = (
                feats.flatten(2).transpose(1, 2) if feats.shape[1] == self.embed_dim else feats.flatten(1, 2)
            )
        elif feats.ndim == 3:  # transformer tokens
            patch = feats[:, self.num_prefix_tokens :]
        else:
            patch = pooled[:, None]
        return {"cls": pooled, "patch": patch}

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)["cls"]

    def get_intermediate_layers(self, x: Tensor, indices: Sequence[int]) -> list[Tensor]:
        if not hasattr(self.model, "forward_intermediates"):
            raise NotImplementedError(f"timm model {self.name} has no forward_intermediates")
        return list(self.model.forward_intermediates(x, indices=list(indices), intermediates_only=True))

    def load_checkpoint(self, sd: dict[str, Tensor]) -> tuple[list, list, list]:
        dropped: list[str] = []
        if self._convert is not None:
            sd, dropped = self._convert(sd, self.model)
        missing, unexpected, ignored = load_plain(self.model, sd, ("head.", "fc.", "classifier."))
        return missing, unexpected, dropped + ignored


@register_prefix("timm")
def _timm(model_name: str, **kwargs) -> TimmBackbone:
    return TimmBackbone(model_name, **kwargs)


# --- supervised ViT-B/16 -------------------------------------------------------------------
# timm pretrained_cfg of vit_base_patch16_224.augreg2_in21k_ft_in1k: 224 px, crop_pct 0.9
# (resize 248), bicubic, mean = std = 0.5 (timm resolve_data_config + create_transform)
VIT_B16_PREPROCESS = Preprocess(224, crop_pct(224, 0.9), "shortest", "bicubic", HALF, HALF, "cls",
                                "timm resolve_data_config(vit_base_patch16_224.augreg2_in21k_ft_in1k)")


@register_baseline(Card(
    name="vit_base_patch16_224", family="ViT (supervised)", library="timm",
    arch="vit_base_patch16_224", hub_id="timm/vit_base_patch16_224.augreg2_in21k_ft_in1k",
    download="https://huggingface.co/timm/vit_base_patch16_224.augreg2_in21k_ft_in1k",
    files=("model.safetensors",), licence="Apache-2.0",
    paper="Dosovitskiy et al. 2021; Steiner et al. 2022 (AugReg); DermINO Supplementary Table 1",
    note="timm's layout as published; the ImageNet head is dropped (reported)", preprocess=VIT_B16_PREPROCESS,
), tiny={"img_size": 32, "depth": 2})
def vit_base_patch16_224(**kw) -> TimmBackbone:
    return TimmBackbone("vit_base_patch16_224", preprocess=VIT_B16_PREPROCESS, **kw)


# --- DINOv3 ---------------------------------------------------------------------------------
def convert_dinov3(sd: dict[str, Tensor], model: nn.Module) -> tuple[dict[str, Tensor], list[str]]:
    """Meta's DINOv3 file -> timm Eva keys, by timm's own converter; lists what it drops."""
    if "storage_tokens" not in sd:  # already timm's layout
        return sd, []
    from timm.models.eva import checkpoint_filter_fn

    out = checkpoint_filter_fn(sd, model)
    # what timm's converter leaves out on purpose: RoPE periods (recomputed), the k-bias mask
    # (timm's k bias is fixed at zero, as the mask makes it upstream), the pretraining mask token
    dropped = [k for k in sd if k.endswith((".periods", ".bias_mask")) or k == "mask_token"
               or k.startswith(("projectors.", "local_cls_norm"))]
    return out, dropped


# timm pretrained_cfg of vit_*_patch16_dinov3.lvd1689m: 256 px, crop_pct 1.0, bicubic, ImageNet
DINOV3_PREPROCESS = Preprocess(256, 256, "shortest", "bicubic", IMAGENET_MEAN, IMAGENET_STD, "cls",
                               "timm resolve_data_config(vit_*_patch16_dinov3.lvd1689m)")
DINOV3_FILES = {"s": "dinov3_vits16_pretrain_lvd1689m-08c60483.pth",
                "b": "dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth",
                "l": "dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth"}
_DINOV3_ARCH = {"s": "vit_small_patch16_dinov3_qkvb", "b": "vit_base_patch16_dinov3_qkvb",
                "l": "vit_large_patch16_dinov3_qkvb"}


def _dinov3_factory(size: str):
    def make(**kw) -> TimmBackbone:
        kw.setdefault("global_pool", "token")  # upstream DINOv3 reports the CLS token
        return TimmBackbone(_DINOV3_ARCH[size], preprocess=DINOV3_PREPROCESS, convert=convert_dinov3, **kw)

    return make


for _s, _file in DINOV3_FILES.items():
    register_baseline(Card(
        name=f"dinov3_vit{_s}16", family="DINOv3", library="timm", arch=_DINOV3_ARCH[_s],
        hub_id=f"timm/{_DINOV3_ARCH[_s].replace('_qkvb', '')}.lvd1689m (timm layout, no qkv bias keys)",
        download="https://ai.meta.com/resources/models-and-libraries/dinov3-downloads/ "
                 "(facebookresearch/dinov3 README)", files=(_file,),
        licence="DINOv3 License", paper="Simeoni et al. 2025, DINOv3", preprocess=DINOV3_PREPROCESS,
        sha256=_file.rsplit("-", 1)[1].split(".")[0],
        note="Meta's file converted by timm eva.checkpoint_filter_fn; 4 register tokens as published; "
             "sha256 prefix from the file name (torch.hub check_hash convention)",
    ), tiny={"embed_dim": 64, "depth": 2, "num_heads": 2, "img_size": 32})(_dinov3_factory(_s))


# --- PanDerm --------------------------------------------------------------------------------
def convert_panderm(sd: dict[str, Tensor], model: nn.Module) -> tuple[dict[str, Tensor], list[str]]:
    """PanDerm checkpoint -> timm Beit keys: keep the ``encoder.`` part when there is one (the
    pretraining file also holds the CAE decoder / teacher), drop the relative-position index."""
    dropped: list[str] = []
    if any(k.startswith("encoder.") for k in sd):
        dropped = [k for k in sd if not k.startswith("encoder.")]
        sd = {k.removeprefix("encoder."): v for k, v in sd.items() if k.startswith("encoder.")}
    dropped += [k for k in sd if "relative_position_index" in k]
    return {k: v for k, v in sd.items() if "relative_position_index" not in k}, dropped


# SiyuanYan1/PanDerm classification/models/builder.py get_eval_transforms: Resize(256) (bilinear,
# torchvision's default) -> CenterCrop(224) -> ImageNet mean with std (0.228, 0.224, 0.225) as there
PANDERM_PREPROCESS = Preprocess(224, 256, "shortest", "bilinear", IMAGENET_MEAN, (0.228, 0.224, 0.225), "cls",
                                "SiyuanYan1/PanDerm classification/models/builder.py get_eval_transforms")
_PANDERM = {
    "l": ("beit_large_patch16_224", "panderm_ll_data6_checkpoint-499.pth"),
    "b": ("beit_base_patch16_224", "panderm_bb_data6_checkpoint-499.pth"),
}


def _panderm_factory(size: str):
    def make(**kw) -> TimmBackbone:
        args = {"use_abs_pos_emb": True, "use_rel_pos_bias": False, "use_shared_rel_pos_bias": False,
                "global_pool": "token", "init_values": 0.1, **kw}
        return TimmBackbone(_PANDERM[size][0], preprocess=PANDERM_PREPROCESS, convert=convert_panderm, **args)

    return make


for _s, (_arch, _file) in _PANDERM.items():
    register_baseline(Card(
        name=f"panderm_vit{_s}16", family="PanDerm", library="timm", arch=f"{_arch} (Beit, abs pos, no rel bias)",
        hub_id="none (Google Drive, SiyuanYan1/PanDerm README)",
        download="https://github.com/SiyuanYan1/PanDerm#1-download-panderm-pre-trained-weights", files=(_file,),
        licence="CC BY-NC-ND 4.0 (PanDerm repository)", paper="Yan et al. 2025, Nature Medicine (PanDerm)",
        preprocess=PANDERM_PREPROCESS,
        note="PanDerm's own ViT (modeling_finetune.VisionTransformer) is not in a maintained library; timm's "
             "BEiT has the same modules and key names (q_bias/v_bias, gamma_1/2), checked key-for-key in tests",
    ), tiny={"img_size": 32, "depth": 2})(_panderm_factory(_s))


# --- LVM-Med ViT-B --------------------------------------------------------------------------
def convert_lvm_med(sd: dict[str, Tensor], model: nn.Module) -> tuple[dict[str, Tensor], list[str]]:
    """LVM-Med's ``lvmmed_vit.pth`` (SAM's ``ImageEncoderViT`` keys, segment_anything/modeling/
    image_encoder.py) -> timm ``VisionTransformerSAM``: ``mlp.lin{1,2}`` -> ``mlp.fc{1,2}``, an
    optional ``image_encoder.`` prefix removed (timm's samvit checkpoint_filter_fn does the same
    for SAM files). LVM-Med's classifier runs without absolute position embeddings
    (model/unet_vit_classification.py, ``use_abs_pos=False``): a ``pos_embed`` is reported as ignored."""
    sd = {k.removeprefix("image_encoder."): v for k, v in sd.items()}
    dropped = [k for k in sd if k == "pos_embed"]
    return {k.replace("mlp.lin", "mlp.fc"): v for k, v in sd.items() if k != "pos_embed"}, dropped


class LVMMedViT(TimmBackbone):
    """LVM-Med's classification feature: the last block's tokens before SAM's neck, averaged
    (duyhominhnguyen/LVM-Med model/unet_vit_classification.py: blocks -> permute -> AdaptiveAvgPool2d)."""

    def __init__(self, model_name: str, **kwargs):
        super().__init__(model_name, **kwargs)
        self.embed_dim = int(self.model.embed_dim)  # the block width, not SAM's 256-channel neck

    def forward_features(self, x: Tensor, masks: Tensor | None = None) -> dict[str, Tensor]:
        no_masks(masks, "lvm_med_vit_b16")
        fmap = self.model.forward_intermediates(x, indices=[-1], intermediates_only=True)[-1]
        return {"cls": fmap.mean(dim=(2, 3)), "patch": fmap.flatten(2).transpose(1, 2)}


# LVM-Med classification_VIT/train_SAMVIT_classification.py: Resize((224, 224)) (bilinear),
# ToTensor, ImageNet mean/std
LVM_MED_PREPROCESS = Preprocess(224, 224, "squash", "bilinear", IMAGENET_MEAN, IMAGENET_STD, "cls",
                                "duyhominhnguyen/LVM-Med classification_VIT/train_SAMVIT_classification.py")


@register_baseline(Card(
    name="lvm_med_vit_b16", family="LVM-Med", library="timm", arch="samvit_base_patch16 (SAM ViT-B, no abs pos)",
    hub_id="ngctnnnn/lvmmed_vit (transformers copy)",
    download="https://github.com/duyhominhnguyen/LVM-Med#1-pretrained-models (Google Drive)",
    files=("lvmmed_vit.pth",), licence="see duyhominhnguyen/LVM-Med", paper="Nguyen et al. 2023, NeurIPS (LVM-Med); "
    "DermINO Supplementary Table 1",
    note="SAM's image encoder from timm (vision_transformer_sam.py), built for 1024 px as trained; LVM-Med's "
         "classifier feeds 224 px (window attention pads, relative positions are interpolated) and averages "
         "the pre-neck tokens; SAM's neck is loaded but unused by that feature",
    preprocess=LVM_MED_PREPROCESS,
), tiny={"depth": 4})
def lvm_med_vit_b16(**kw) -> LVMMedViT:
    kw.setdefault("use_abs_pos", False)
    return LVMMedViT("samvit_base_patch16", preprocess=LVM_MED_PREPROCESS, convert=convert_lvm_med, **kw)


# --- MedImageInsight ------------------------------------------------------------------------
def convert_medimageinsight(sd: dict[str, Tensor], model: nn.Module) -> tuple[dict[str, Tensor], list[str]]:
    """MedImageInsight's UniCL file -> timm DaViT keys + ``projection``.

    The vision file holds ``image_encoder.*`` (older exports: ``visual.*``) in the Florence /
    UniCL DaViT naming (``convs.i``, ``blocks.i.j.{spatial,channel}_block.{conv1.fn.dw,
    window_attn.norm, window_attn.fn, channel_attn.*, ffn.norm, ffn.fn.net}``, ``norms``) and the
    projection ``image_projection`` (``vision_projection``). timm's own Florence-2 converter
    (davit.py ``_convert_florence2``) maps that naming; ``norms`` is the pooled-feature norm, timm's
    ``head.norm``. Text-side keys (``lang_encoder.*``, ``lang_projection``, ``logit_scale``) are
    reported as ignored: the language model is a separate download with a tokenizer we lack offline.
    """
    from timm.models.davit import _convert_florence2

    image, dropped, out = {}, [], {}
    for k, v in sd.items():
        if k.startswith(("image_encoder.", "visual.")):
            image["vision_tower." + k.split(".", 1)[1]] = v
        elif k in ("image_projection", "vision_projection"):
            out["projection"] = v
        else:
            dropped.append(k)
    for k, v in _convert_florence2(image, model).items():
        out[k.replace("norms.", "head.norm.")] = v
    return out, dropped


class MedImageInsightDaViT(TimmBackbone):
    """MedImageInsight's image tower (timm ``davit_huge_fl`` shapes) and its UniCL projection.

    ``cls``: layer-normed average of the last stage (UniCL DaViT ``forward_features``);
    ``proj``: that times ``image_projection`` (``UniCLModel.encode_image`` before L2 norm).
    """

    def __init__(self, model_name: str, proj_dim: int = 1024, **kwargs):
        super().__init__(model_name, **kwargs)
        self.projection = nn.Parameter(torch.zeros(self.embed_dim, proj_dim))
        nn.init.normal_(self.projection, std=0.02)

    def forward_features(self, x: Tensor, masks: Tensor | None = None) -> dict[str, Tensor]:
        out = super().forward_features(x, masks)
        return {**out, "proj": out["cls"] @ self.projection}

    def load_checkpoint(self, sd: dict[str, Tensor]) -> tuple[list, list, list]:
        sd, dropped = convert_medimageinsight(sd, self.model)
        projection = sd.pop("projection", None)
        missing, unexpected, ignored = load_plain(self.model, sd, ())
        if projection is None:
            missing.append("projection (image_projection)")
        else:
            with torch.no_grad():
                self.projection.copy_(projection)
        return missing, unexpected, dropped + ignored


# MedImageInsight config (IMAGE_ENCODER.IMAGE_SIZE 480, TEST.CENTER_CROP False, AUG.INTERPOLATION
# bicubic): resize to 480 x 480, bicubic, ImageNet mean/std
MEDIMAGEINSIGHT_PREPROCESS = Preprocess(480, 480, "squash", "bicubic", IMAGENET_MEAN, IMAGENET_STD, "proj",
                                        "MedImageInsight 2024.09.27 config.yaml (IMAGE_SIZE 480, no centre crop)")


@register_baseline(Card(
    name="medimageinsight", family="MedImageInsight", library="timm",
    arch="davit_huge_fl shapes: DaViT dims 256-2048, depths 1-1-9-1, window 12, channel attention v2",
    hub_id="lion-ai/MedImageInsights (2024.09.27/vision_model/medimageinsigt-v1.0.0.pt)",
    download="https://huggingface.co/lion-ai/MedImageInsights", files=("medimageinsigt-v1.0.0.pt",),
    licence="MIT (Microsoft MedImageInsights)", paper="Codella et al. 2024, MedImageInsight; DermINO Suppl. Table 1",
    text_note="the UniCL language model is a separate file with a Hugging Face tokenizer: not offline",
    note="Microsoft's DaViT (UniCL davit_v1) is not a maintained package; timm's DaViT with the Florence-2 "
         "options computes the same blocks (window attention, N^-1/2-scaled channel attention, conv position "
         "encodings, pre-norm downsampling) and timm's Florence-2 key converter maps the names; the paper's "
         "'DaViT-Large' is this 360 M-parameter tower; normalisation (ImageNet) from the reference code",
    preprocess=MEDIMAGEINSIGHT_PREPROCESS,
), tiny={"depths": (1, 1, 1, 1), "embed_dims": (32, 64, 128, 256), "num_heads": (2, 4, 8, 16), "proj_dim": 16})
def medimageinsight(**kw) -> MedImageInsightDaViT:
    return MedImageInsightDaViT("davit_huge_fl", preprocess=MEDIMAGEINSIGHT_PREPROCESS, **kw)
