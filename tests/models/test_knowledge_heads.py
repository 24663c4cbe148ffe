"""Knowledge-head parametrisations (issue 11): the fixed text map, the prior-level start, export."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dermino.losses.knowledge import class_prior_floor, knowledge_loss
from dermino.models.knowledge_heads import (
    Eq5Head,
    ProjectionHead,
    SigmoidMatchHead,
    build_knowledge_head,
    class_frequencies,
    fixed_text_map,
    load_head,
    save_head,
)


def _cos(x):
    x = F.normalize(x.double(), dim=1)
    return x @ x.t()


@pytest.mark.parametrize(("c", "e", "d"), [(8, 384, 192), (5, 32, 64), (12, 64, 64)])
def test_fixed_map_preserves_pairwise_cosines(c, e, d):
    w = F.normalize(torch.randn(c, e, generator=torch.Generator().manual_seed(c)), dim=1)
    p = fixed_text_map(w, d)
    assert p.shape == (d, e)
    mapped = w @ p.t()
    assert (_cos(mapped) - _cos(w)).abs().max() < 1e-5
    assert (mapped.norm(dim=1) - 1).abs().max() < 1e-5  # inner products too, not only cosines
    if e <= d:  # an isometry of the whole text space: any new name keeps its cosines as well
        new = F.normalize(torch.randn(3, e), dim=1)
        both = torch.cat([w, new])
        assert (_cos(both @ p.t()) - _cos(both)).abs().max() < 1e-5


def test_fixed_map_is_deterministic_and_keeps_new_names_in_wide_text_space():
    w = F.normalize(torch.randn(6, 384), dim=1)
    assert torch.equal(fixed_text_map(w, 192, seed=3), fixed_text_map(w, 192, seed=3))
    p = fixed_text_map(w, 192)
    assert torch.allclose(p @ p.t(), torch.eye(192), atol=1e-5)  # orthonormal rows
    # a name equal to a training prototype plus an orthogonal part keeps its projection on W
    new = w[0] + 0.1 * F.normalize(torch.randn(384), dim=0)
    assert torch.allclose((new @ p.t()) @ (w[1] @ p.t()), new @ w[1], atol=1e-5)


def test_eq5_head_has_no_free_image_side_map():
    w = F.normalize(torch.randn(7, 384), dim=1)
    head = Eq5Head(w, in_dim=192)
    assert [n for n, _ in head.named_parameters()] == []  # W frozen, scale fixed: nothing but the text
    x = torch.randn(4, 192)
    assert torch.allclose(head(x), x @ (w @ head.text_map.t()).t(), atol=1e-5)
    trainable = Eq5Head(w, in_dim=192, trainable=True)
    assert [n for n, _ in trainable.named_parameters()] == ["weight"]


def test_siglip_first_loss_is_the_class_prior_level():
    """Bias from the class frequencies: the first batch's loss is ``class_prior_floor``."""
    from dermino.models import create

    g = torch.Generator().manual_seed(0)
    targets = (torch.rand(32, 6, generator=g) < torch.tensor([0.5, 0.2, 0.1, 0.05, 0.3, 0.15])).float()
    mask = torch.ones_like(targets)
    mask[24:, 3:] = 0  # a second label space
    torch.manual_seed(0)
    backbone = create("dermino_vit_tiny_14", img_size=56, depth=2, embed_dim=64, num_heads=2).train()
    cls = backbone.forward_features(torch.randn(32, 3, 56, 56))["cls"]
    head = SigmoidMatchHead(F.normalize(torch.randn(6, 384), dim=1), 64, class_frequencies(targets, mask))
    head.train()
    loss = knowledge_loss(head(cls), targets, mask)
    # the floor uses per-label-space frequencies; class_frequencies pools the spaces: same here
    # up to the second space's rows, so compare with the pooled-frequency constant predictor
    const = torch.logit(class_frequencies(targets, mask)).expand_as(targets)
    assert abs(loss.item() - float(knowledge_loss(const, targets, mask))) < 1e-3
    one_space = torch.ones_like(targets)
    head2 = SigmoidMatchHead(F.normalize(torch.randn(6, 384), dim=1), 64, class_frequencies(targets, one_space)).train()
    assert abs(float(knowledge_loss(head2(cls), targets, one_space)) - class_prior_floor(targets, one_space)) < 1e-3
    assert not bool(head2.pending_init)  # only the first batch initialises
    assert head2.temperature.requires_grad and head2.bias.requires_grad


def test_siglip_reads_its_pending_flag_from_the_device_only_until_initialised(monkeypatch):
    """After the first batch a training forward makes no ``bool(tensor)`` (a GPU sync); a loaded
    state with the initialisation still pending is honoured."""
    w = F.normalize(torch.randn(4, 16), dim=1)
    head = build_knowledge_head("siglip", w, 8, class_prior=torch.full((4,), 0.25)).train()
    head(torch.randn(6, 8))
    assert not bool(head.pending_init) and head.bias_shift.abs().sum() > 0
    reads = []
    real = torch.Tensor.__bool__
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda t: reads.append(t.shape) or real(t))
    head(torch.randn(6, 8))
    assert reads == []
    monkeypatch.undo()
    fresh = build_knowledge_head("siglip", w, 8, class_prior=torch.full((4,), 0.25)).train()
    head.load_state_dict(fresh.state_dict())  # pending again: the next batch initialises
    head(torch.randn(6, 8))
    assert not bool(head.pending_init) and head.bias_shift.abs().sum() > 0


def test_anchor_penalty_pulls_trainable_prototypes_back():
    w = F.normalize(torch.randn(4, 16), dim=1)
    head = build_knowledge_head("siglip", w, 32, trainable=True)
    assert float(head.anchor_penalty()) == 0.0
    with torch.no_grad():
        head.weight.add_(0.5)
    assert float(head.anchor_penalty()) == pytest.approx(0.25 * 32, rel=1e-5)
    frozen = build_knowledge_head("eq5", w, 32)
    assert float(frozen.anchor_penalty()) == 0.0


@pytest.mark.parametrize("kind", ["projection", "eq5", "siglip"])
def test_head_file_round_trip_and_initial_head(tmp_path, kind):
    w = F.normalize(torch.randn(5, 48), dim=1)
    torch.manual_seed(1)
    head = build_knowledge_head(kind, w, 32, class_prior=torch.full((5,), 0.2), trainable=True)
    for p in head.parameters():
        with torch.no_grad():
            p.add_(0.1)
    path = save_head(head, tmp_path / "head.safetensors", w, {"classes": list("abcde"), "encoder": "x", "pooling": "cls"})
    loaded, info = load_head(path)
    assert info["kind"] == kind and info["classes"] == list("abcde") and info["pooling"] == "cls"
    x = torch.randn(3, 32)
    head.eval()
    assert torch.allclose(loaded(x), head(x), atol=1e-5)
    text = F.normalize(torch.randn(2, 48), dim=1)
    assert torch.allclose(loaded.score(x, loaded.map_text(text)), head.score(x, head.map_text(text)), atol=1e-5)
    initial, _ = load_head(path, initial=True)
    if kind != "projection":
        assert torch.allclose(initial.weight, w @ initial.text_map.t(), atol=1e-6)
    assert not torch.allclose(initial(x), head(x))


def test_unknown_head_is_rejected():
    with pytest.raises(ValueError, match="siglip"):
        build_knowledge_head("clip", torch.randn(3, 8), 8)
    assert isinstance(build_knowledge_head("projection", torch.randn(3, 8), 16), ProjectionHead)
