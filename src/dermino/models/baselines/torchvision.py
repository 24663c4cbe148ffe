"""torchvision CNNs (ResNet-50, ResNeXt-50/101): pooled features and the last feature map.

``resnext101_32x8d`` is the DermINO paper's CNN comparator with torchvision's ImageNet
weights (``IMAGENET1K_V1``, the ``pretrained=True`` file research code loads); the file is
torchvision's own ``state_dict`` (``conv1.*`` ... ``fc.*``), the classifier ``fc`` is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from dermino.models.baselines.common import Card, load_plain, no_masks, register_baseline
from dermino.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from dermino.models.registry import register


class TorchvisionResNet(nn.Module):
    """torchvision ResNet / ResNeXt trunk: ``cls`` = global average pool, ``patch`` = last map tokens."""

    def __init__(self, arch: str, preprocess: Preprocess | None = None):
        super().__init__()
        import torchvision

        self.net = getattr(torchvision.models, arch)(weights=None)
        self.net.fc = nn.Identity()
        self.name = arch
        self.embed_dim = 2048
        self.patch_size = None
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        if preprocess is not None:
            self.preprocess = preprocess

    def _maps(self, x: Tensor) -> list[Tensor]:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        maps = []
        for layer in (n.layer1, n.layer2, n.layer3, n.layer4):
            x = layer(x)
            maps.append(x)
        return maps

    def forward_features(self, x: Tensor, masks: Tensor | None = None) -> dict[str, Tensor]:
        no_masks(masks, self.name)
        fmap = self._maps(x)[-1]
        return {"cls": fmap.mean(dim=(2, 3)), "patch": fmap.flatten(2).transpose(1, 2)}

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)["cls"]

    def get_intermediate_layers(self, x: Tensor, indices: Sequence[int]) -> list[Tensor]:
        """Outputs of stages layer1..layer4 (indices 0-3, negatives allowed)."""
        maps = self._maps(x)
        return [maps[i] for i in indices]

    def load_checkpoint(self, sd: dict[str, Tensor]) -> tuple[list, list, list]:
        return load_plain(self.net, sd, ("fc.",))


for _arch in ("resnet50", "resnext50_32x4d"):
    register(_arch)(lambda _a=_arch, **kw: TorchvisionResNet(_a, **kw))


# torchvision.models.ResNeXt101_32X8D_Weights.IMAGENET1K_V1.transforms():
# ImageClassification(crop_size=224, resize_size=256, bilinear), ImageNet mean/std
RESNEXT101_PREPROCESS = Preprocess(224, 256, "shortest", "bilinear", IMAGENET_MEAN, IMAGENET_STD, "cls",
                                   "torchvision ResNeXt101_32X8D_Weights.IMAGENET1K_V1.transforms()")


@register_baseline(Card(
    name="resnext101_32x8d", family="ResNeXt", library="torchvision", arch="torchvision.models.resnext101_32x8d",
    hub_id="torchvision ResNeXt101_32X8D_Weights.IMAGENET1K_V1",
    download="https://download.pytorch.org/models/resnext101_32x8d-8ba56ff5.pth",
    files=("resnext101_32x8d-8ba56ff5.pth",), licence="BSD-3-Clause (torchvision)",
    paper="Xie et al. 2017, ResNeXt; DermINO Supplementary Table 1", sha256="8ba56ff5",
    preprocess=RESNEXT101_PREPROCESS,
    note="sha256 prefix from torchvision's file name; IMAGENET1K_V2 (-110c445d.pth, resize 232) loads too, "
         "with V1's preprocessing record",
))
def resnext101_32x8d(**kw) -> TorchvisionResNet:
    return TorchvisionResNet("resnext101_32x8d", preprocess=RESNEXT101_PREPROCESS, **kw)
