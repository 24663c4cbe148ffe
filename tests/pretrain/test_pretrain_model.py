"""Student/teacher engine: no teacher gradient, exact EMA, mask tokens, switchable terms, groups."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dermino.data.masking import MaskingConfig, batch_masks
from dermino.pretrain.config import tiny_config
from dermino.pretrain.model import TERMS, StudentTeacher, param_groups

B, N_LOCAL, C = 4, 2, 3


def make_batch(seed: int = 0, b: int = B) -> dict:
    g = torch.Generator().manual_seed(seed)
    masks = batch_masks(2 * b, (4, 4), MaskingConfig(), np.random.default_rng(seed))
    targets = torch.zeros(b, C)
    targets[torch.arange(b), torch.arange(b) % C] = 1
    return {
        "global_crops": torch.randn(2 * b, 3, 56, 56, generator=g),
        "local_crops": torch.randn(N_LOCAL * b, 3, 28, 28, generator=g),
        "masks": masks,
        "targets": targets,
        "label_mask": torch.ones(b, C),
        "n_global": 2,
        "n_local": N_LOCAL,
    }


def make_model(**loss_flags) -> StudentTeacher:
    torch.manual_seed(0)
    cfg = tiny_config()
    for name, on in loss_flags.items():
        getattr(cfg.losses, name).enabled = on
    protos = torch.nn.functional.normalize(torch.randn(C, 16), dim=1)
    return StudentTeacher(cfg.model, cfg.losses, cfg.crops.global_size, protos)


def test_teacher_gets_no_gradient_and_ema_is_exact():
    model = make_model()
    out = model.compute_loss(make_batch(), teacher_temp=0.04)
    out.loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.student.backbone.parameters())
    with torch.no_grad():  # make student and teacher differ, then check one EMA step exactly
        for p in model.student.parameters():
            p.add_(torch.randn_like(p))
    t_before = [p.detach().clone() for p in model.teacher.parameters()]
    t_params, s_params = model.teacher_student_pairs()
    m = 0.9
    model.update_teacher(m)
    for before, t, s in zip(t_before, t_params, s_params, strict=True):
        expected = before * m + s.detach() * (1 - m)
        torch.testing.assert_close(t, expected, rtol=1e-6, atol=1e-7)
    # momentum 1.0 leaves the teacher exactly as it is
    frozen = [p.detach().clone() for p in model.teacher.parameters()]
    model.update_teacher(1.0)
    assert all(torch.equal(a, b) for a, b in zip(frozen, model.teacher.parameters(), strict=True))


def test_masked_tokens_are_replaced_by_the_mask_token_through_the_engine():
    model = make_model()
    batch = make_batch(1)
    backbone = model.student.backbone
    with torch.no_grad():
        backbone.mask_token.fill_(7.0)
    seen = {}

    def grab(name):
        def hook(_module, inputs, _output):
            seen.setdefault(name, []).append(inputs[0].detach().clone())

        return hook

    h1 = backbone.vit.norm_pre.register_forward_hook(grab("student"))
    h2 = model.teacher.backbone.vit.norm_pre.register_forward_hook(grab("teacher"))
    model.compute_loss(batch, teacher_temp=0.04)
    h1.remove()
    h2.remove()
    tokens = seen["student"][0]  # first call: the global crops, after position embedding
    masks = batch["masks"]
    assert masks.any() and tokens.shape[0] == masks.shape[0]
    grid = backbone.mask_token.detach().view(1, 1, 1, -1).expand(1, 4, 4, -1)
    with torch.no_grad():
        expected = backbone.vit._pos_embed(grid)[0, backbone.num_prefix_tokens :]  # mask token + pos
    patches = tokens[:, backbone.num_prefix_tokens :]
    for i in range(masks.shape[0]):
        m = masks[i]
        torch.testing.assert_close(patches[i][m], expected[m])
        assert not torch.allclose(patches[i][~m], expected[~m])
    # the teacher sees the same crops unmasked
    t_patches = seen["teacher"][0][:, 1:]
    assert not torch.isclose(t_patches[masks], torch.tensor(7.0)).all()


def test_terms_are_switchable_and_weighted():
    batch = make_batch(2)
    full = make_model(gram=True).compute_loss(batch, 0.04)
    assert all(torch.isfinite(full.terms[k]) and full.terms[k] != 0 for k in TERMS)
    cfg = tiny_config()
    manual = (full.terms["dino_global"] + full.terms["dino_local"] + full.terms["ibot"]
              + cfg.losses.koleo.weight * full.terms["koleo"] + full.terms["knowledge"]
              + cfg.losses.gram.weight * full.terms["gram"])
    torch.testing.assert_close(full.loss, manual)
    assert make_model().compute_loss(batch, 0.04).terms["gram"] == 0  # off by default
    no_k = make_model(knowledge=False)
    assert no_k.student.knowledge_head is None
    out = no_k.compute_loss(batch, 0.04)
    assert out.terms["knowledge"] == 0 and out.terms["dino_global"] != 0
    no_ibot = make_model(ibot=False)
    assert no_ibot.student.ibot_head is None and no_ibot.compute_loss(batch, 0.04).terms["ibot"] == 0
    with pytest.raises(ValueError, match="disabled"):
        make_model(dino=False, ibot=False, koleo=False, knowledge=False)


def test_centering_alternative_runs_and_updates_centre():
    torch.manual_seed(0)
    cfg = tiny_config()
    cfg.losses.dino.normalisation = "centering"
    cfg.losses.knowledge.enabled = False
    model = StudentTeacher(cfg.model, cfg.losses, 56)
    out = model.compute_loss(make_batch(3), 0.04)
    assert torch.isfinite(out.loss)
    model.update_centers(out.teacher_logits)
    assert model.dino_center.center.abs().sum() > 0 and model.ibot_center.center.abs().sum() > 0


def test_param_groups_decay_and_patch_embed_lr():
    model = make_model()
    groups = param_groups(model.student, patch_embed_lr_mult=0.2, layerwise_decay=0.5)
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = dict(model.student.named_parameters())
    assert by_param[id(named["backbone.vit.patch_embed.proj.weight"])]["lr_mult"] == pytest.approx(0.2 * 0.5**3)
    assert by_param[id(named["backbone.vit.blocks.0.attn.qkv.bias"])]["wd_mult"] == 0.0
    assert by_param[id(named["backbone.vit.blocks.0.attn.qkv.weight"])]["wd_mult"] == 1.0
    assert by_param[id(named["backbone.vit.blocks.1.attn.qkv.weight"])]["lr_mult"] == pytest.approx(0.5)
    assert by_param[id(named["backbone.mask_token"])]["wd_mult"] == 0.0
    assert by_param[id(named["dino_head.last_layer.weight_v"])]["last_layer"]
    assert sum(len(g["params"]) for g in groups) == len([p for p in model.student.parameters() if p.requires_grad])
