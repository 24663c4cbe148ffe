"""Device-side photometric augmentation: every batched op against torchvision's reference op."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from dermino.data.images import read_rgb
from dermino.data.photometric import (
    _COL,
    PARAMS,
    GeometricMultiCrop,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    apply_photometric,
    gaussian_blur,
    multicrop_transform,
)
from dermino.data.sample import sample_root
from dermino.data.transforms import CropsConfig


@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    """Six real 56 px dermoscopy crops, uint8 (N, 3, 56, 56)."""
    files = sorted((sample_root() / "ham10000" / "images").glob("*.jpg"))[:6]
    return torch.stack([TF.resize(TF.pil_to_tensor(read_rgb(f)), [56, 56], antialias=True) for f in files])


def test_each_op_matches_torchvision(crops):
    x = crops.float() / 255
    f = torch.tensor([0.6, 0.9, 1.0, 1.2, 1.4, 0.7])
    h = torch.tensor([-0.1, -0.05, 0.0, 0.02, 0.07, 0.1])
    for ours, ref, fac in ((adjust_brightness, TF.adjust_brightness, f), (adjust_contrast, TF.adjust_contrast, f),
                           (adjust_saturation, TF.adjust_saturation, f), (adjust_hue, TF.adjust_hue, h)):
        want = torch.stack([ref(x[i], float(fac[i])) for i in range(len(x))])
        torch.testing.assert_close(ours(x.clone(), fac), want, atol=2e-5, rtol=0, msg=ours.__name__)
    sigma = torch.tensor([0.1, 0.5, 1.0, 1.5, 2.0, 0.8])
    want = torch.stack([TF.gaussian_blur(x[i], [9, 9], [float(sigma[i])] * 2) for i in range(len(x))])
    torch.testing.assert_close(gaussian_blur(x, sigma), want, atol=2e-5, rtol=0)


def _reference(crop: torch.Tensor, row: torch.Tensor, cfg: CropsConfig) -> torch.Tensor:
    """One crop through torchvision's functional ops in the row's order."""
    x = crop.float() / 255
    if row[_COL["jitter"]]:
        ops = [lambda t: TF.adjust_brightness(t, float(row[_COL["brightness"]])),
               lambda t: TF.adjust_contrast(t, float(row[_COL["contrast"]])),
               lambda t: TF.adjust_saturation(t, float(row[_COL["saturation"]])),
               lambda t: TF.adjust_hue(t, float(row[_COL["hue"]]))]
        for k in ("o0", "o1", "o2", "o3"):
            x = ops[int(row[_COL[k]])](x)
    if row[_COL["gray"]]:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    if row[_COL["blur"]]:
        x = TF.gaussian_blur(x, [9, 9], [float(row[_COL["sigma"]])] * 2)
    if row[_COL["solarize"]]:
        x = TF.solarize(x, 128 / 255)
    return TF.normalize(x, list(cfg.mean), list(cfg.std))


def test_whole_pipeline_matches_the_reference_per_crop(crops):
    cfg = CropsConfig(jitter_p=1.0, grayscale_p=0.5)
    torch.manual_seed(0)
    from dermino.data.photometric import draw_params

    rows = torch.stack([draw_params(cfg, blur_p=0.5, solarize_p=0.5) for _ in range(len(crops))])
    assert rows.shape == (6, len(PARAMS)) and rows[:, _COL["jitter"]].all()
    # every path is exercised: several orders, grey, blur and solarise on some crops but not all
    assert len({tuple(r[_COL["o0"]: _COL["o3"] + 1].tolist()) for r in rows}) > 1
    want = torch.stack([_reference(c, r, cfg) for c, r in zip(crops, rows, strict=True)])
    for sync_free in (False, True):  # the CPU path and the device (no nonzero) path
        got = apply_photometric(crops, rows, cfg.mean, cfg.std, sync_free=sync_free)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0, msg=f"sync_free={sync_free}")


def test_geometric_crops_are_uint8_and_seeded():
    cfg = CropsConfig(global_size=56, local_size=28, n_local=3, photometric="device")
    tf = multicrop_transform(cfg)
    assert isinstance(tf, GeometricMultiCrop)
    image = read_rgb(sorted((sample_root() / "ham10000" / "images").glob("*.jpg"))[0])
    torch.manual_seed(5)
    a = tf(image)
    torch.manual_seed(5)
    b = tf(image)
    assert a["global"][0].dtype == torch.uint8 and a["global"][0].shape == (3, 56, 56)
    assert a["local_photo"].shape == (3, len(PARAMS))
    assert all(torch.equal(x, y) for x, y in zip(a["global"] + a["local"], b["global"] + b["local"], strict=True))
    assert a["global_photo"][0, _COL["blur"]] == 1  # the first global view is always blurred
    assert a["global_photo"][0, _COL["solarize"]] == 0  # and never solarised
    with pytest.raises(ValueError, match="photometric"):
        multicrop_transform(CropsConfig(photometric="gpu"))


def test_trainer_step_with_device_photometrics(tmp_path):
    from dermino.pretrain.config import tiny_config
    from dermino.pretrain.trainer import Trainer

    cfg = tiny_config(str(tmp_path))
    cfg.crops.photometric = "device"
    t = Trainer(cfg)
    batch = next(t.batches())
    assert batch["global_crops"].dtype == torch.uint8 and batch["global_photo"].shape == (8, len(PARAMS))
    ready = t._to_device(batch)
    assert ready["global_crops"].dtype == torch.float32 and "global_photo" not in ready
    row = t.train_step([batch])
    assert torch.isfinite(torch.tensor(row["loss"])) and row["skipped"] == 0
