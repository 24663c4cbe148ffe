"""Packing global and local crops into one forward (``run.pack_crops``) against separate forwards.

Tolerances (fp32, CPU): the packed forward computes the same sums in another order (longer rows
in the matmuls, masked-out keys in the softmax), so tokens agree to 1e-5 absolute and the loss
terms of a whole training step to 1e-5 relative, the gradient norm to 1e-4 relative.
"""

from __future__ import annotations

import pytest
import torch

from dermino.models import create
from dermino.models.packing import crop_drop_scale, pack, unpack
from dermino.pretrain.config import tiny_config
from dermino.pretrain.fast_step import TrainStep
from dermino.pretrain.model import TERMS
from dermino.pretrain.trainer import Trainer

TOKEN_ATOL, LOSS_RTOL, GRAD_RTOL = 1e-5, 1e-5, 1e-4


def test_pack_layout_and_mask_golden_values():
    a = torch.arange(2 * 5 * 1, dtype=torch.float32).reshape(2, 5, 1)  # 2 crops of 5 tokens
    b = 100 + torch.arange(3 * 2 * 1, dtype=torch.float32).reshape(3, 2, 1)  # 3 crops of 2 tokens
    x, p = pack([a, b])
    assert x.shape == (2 + 2, 5, 1)  # two 2-token crops per 5-token row: 2 rows, 1 padding token each
    assert p.groups == [(2, 5, 1, 2), (3, 2, 2, 2)]
    assert x[2, :, 0].tolist() == [100, 101, 102, 103, 0] and x[3, :, 0].tolist() == [104, 105, 0, 0, 0]
    expected = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]],
                            dtype=torch.bool)
    assert torch.equal(p.mask[2, 0], expected) and p.mask[0, 0].all()
    assert p.crop_of_token[2].tolist() == [2, 2, 3, 3, -1] and p.crop_of_token[3].tolist() == [4, 4, -1, -1, -1]
    back = unpack(x, p)
    assert torch.equal(back[0], a) and torch.equal(back[1], b)


def test_drop_path_scale_is_per_crop_and_zero_on_padding():
    torch.manual_seed(0)
    _, p = pack([torch.zeros(1, 50, 4), torch.zeros(40, 10, 4)])  # 5 local-size crops per row
    scale = crop_drop_scale(p, 0.5, torch.float32)[..., 0]
    for crop in range(p.n_crops):
        values = scale[p.crop_of_token == crop]
        assert values.unique().numel() == 1 and values[0].item() in (0.0, 2.0)
    assert (scale[p.crop_of_token == -1] == 0).all()
    per_crop = torch.stack([scale[p.crop_of_token == c][0] for c in range(p.n_crops)])
    assert 0 < (per_crop == 0).sum() < p.n_crops  # crops of one row are dropped independently


@pytest.mark.parametrize("registers", [0, 2])
def test_packed_forward_equals_separate_forwards(registers):
    torch.manual_seed(registers)
    vit = create("dermino_vit_tiny_14", depth=2, embed_dim=64, num_heads=2, img_size=56,
                 num_register_tokens=registers).eval()
    g, loc = torch.randn(4, 3, 56, 56), torch.randn(8, 3, 28, 28)
    masks = torch.rand(4, 16) < 0.3
    with torch.no_grad():
        packed_g, packed_l = vit.forward_features_packed([(g, masks), (loc, None)])
        sep_g, sep_l = vit.forward_features(g, masks=masks), vit.forward_features(loc)
    for packed, sep in ((packed_g, sep_g), (packed_l, sep_l)):
        for k in ("cls", "patch"):
            assert packed[k].shape == sep[k].shape
            torch.testing.assert_close(packed[k], sep[k], atol=TOKEN_ATOL, rtol=0)


def _trainer(tmp_path, name: str, pack_crops: bool) -> Trainer:
    cfg = tiny_config(str(tmp_path / name))
    cfg.model.drop_path_rate = 0.0  # stochastic depth draws differ between the two layouts
    cfg.crops.n_local = 6  # 3 local crops (4 + 1 tokens) per global-size row (16 + 1)
    cfg.run.pack_crops = pack_crops
    return Trainer(cfg)


def test_training_step_with_packed_crops_gives_the_same_losses_and_gradients(tmp_path):
    plain, packed = _trainer(tmp_path, "plain", False), _trainer(tmp_path, "packed", True)
    assert packed.model.student.pack_crops and not packed.model.teacher.pack_crops
    batch = next(plain.batches())
    for t in (plain, packed):
        t.lr = [1e-4] * t.total_steps
    rows = []
    for t in (plain, packed):
        torch.manual_seed(7)
        step = TrainStep(t)
        rows.append(step.read(step([batch])))
    a, b = rows
    for k in ("loss", *TERMS):
        assert a[k] == pytest.approx(b[k], rel=LOSS_RTOL, abs=1e-7), k
    assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=GRAD_RTOL)
    for (name, p), q in zip(plain.model.state_dict().items(), packed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4, msg=name)


def test_packing_with_activation_checkpointing_trains(tmp_path):
    cfg = tiny_config(str(tmp_path / "ckpt"))
    cfg.run.pack_crops = cfg.run.activation_checkpointing = True
    t = Trainer(cfg)
    step = TrainStep(t)
    row = step.read(step([next(t.batches())]))
    assert row["skipped"] == 0 and row["dino_local"] > 0 and row["grad_norm"] > 0
