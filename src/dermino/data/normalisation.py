"""Pixel normalisation constants shared by the data transforms and the backbones (ImageNet statistics,
which DINOv2 and every timm ViT we load were trained with)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
