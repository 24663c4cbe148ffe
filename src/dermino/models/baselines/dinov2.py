"""DINOv2 ViT-S/B/L/14 (+ ``_reg4``): dermino's own ViTBackbone at DINOv2 sizes.

Pass the official torch-hub checkpoint as ``weights=``; ``dermino.models.weights`` folds its
layout (``register_tokens``, ``mask_token``, 518 px position embeddings) into timm's.
"""

from __future__ import annotations

from dermino.models.backbone import ViTBackbone, ViTSpec
from dermino.models.baselines.common import Card, register_baseline
from dermino.models.preprocess import Preprocess

DINOV2_SIZES = {
    "s": {"embed_dim": 384, "depth": 12, "num_heads": 6},
    "b": {"embed_dim": 768, "depth": 12, "num_heads": 12},
    "l": {"embed_dim": 1024, "depth": 24, "num_heads": 16},
}
_VIT_TINY = {"depth": 2, "embed_dim": 64, "num_heads": 2, "img_size": 28}
# facebookresearch/dinov2 dinov2/data/transforms.py make_classification_eval_transform:
# Resize(256, bicubic) -> CenterCrop(224) -> ImageNet mean/std
DINOV2_PREPROCESS = Preprocess(224, 256, "shortest", "bicubic", source="dinov2/data/transforms.py "
                               "make_classification_eval_transform")


def _dinov2_factory(size: str, registers: int):
    def make(**overrides) -> ViTBackbone:
        args = {**DINOV2_SIZES[size], "num_register_tokens": registers, "layerscale_init": 1e-5, **overrides}
        model = ViTBackbone(ViTSpec(**args))
        model.preprocess = DINOV2_PREPROCESS
        return model

    return make


for _s in DINOV2_SIZES:
    for _reg in (0, 4):
        _name = f"dinov2_vit{_s}14" + ("_reg4" if _reg else "")
        _file = f"dinov2_vit{_s}14{'_reg4' if _reg else ''}_pretrain.pth"
        register_baseline(Card(
            name=_name, family="DINOv2", library="dermino", arch=f"ViTBackbone (timm VisionTransformer) {_s.upper()}/14",
            hub_id=f"torch.hub facebookresearch/dinov2 {_name}",
            download=f"https://dl.fbaipublicfiles.com/dinov2/dinov2_vit{_s}14/{_file}", files=(_file,),
            licence="Apache-2.0", paper="Oquab et al. 2023, DINOv2", preprocess=DINOV2_PREPROCESS,
            note="checkpoint position embeddings (518 px) are kept at their own grid and interpolated per input",
        ), tiny=_VIT_TINY)(_dinov2_factory(_s, _reg))
