"""What a site trains (``train.trainable``): the last k blocks or LoRA adapters besides the head.

Only the trainable tensors leave a site, under the names the server listed; the saved global model
turns into a full backbone + head whose outputs match the federated model's; FedProx pulls exactly
the trainable tensors. Bundled sample, a 2-block random-init ViT-Tiny at 56 px.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dermino.config import ConfigError
from dermino.federated.config import load_federated_config
from dermino.federated.partitions import class_names, client_data, client_names, load_manifests
from dermino.federated.task import predict_proba, train_head
from dermino.federated.trainable import (
    build_model,
    load_full_model,
    load_trainable,
    site_inputs,
    trainable_names,
    trainable_state,
)

FAST = ["embed.image_size=56", "embed.pool=mean", "backbone.overrides.depth=2", "progress=false",
        "strategy.rounds=1", "strategy.fraction_evaluate=0", "train.lr=1e-3", "train.local_epochs=1"]


def cfg_for(work, name: str, *extra: str):
    root, base = work
    return load_federated_config(None, [*FAST, *base, f"out_dir={root / name}", *extra])


def test_trainable_settings_are_validated():
    with pytest.raises(ConfigError, match="train.trainable"):
        load_federated_config(None, ["train.trainable=everything"])
    with pytest.raises(ConfigError, match="train.lora_targets"):
        load_federated_config(None, ["train.trainable=lora", "train.lora_targets=[head]"])
    with pytest.raises(ConfigError, match="train.last_k"):
        load_federated_config(None, ["train.last_k=0"])
    cfg = load_federated_config(None, ["train.trainable=last_blocks", "train.last_k=3", "backbone.overrides.depth=2"])
    with pytest.raises(ValueError, match="train.last_k=3"):
        build_model(cfg, 4)


@pytest.mark.parametrize("mode", ["last_blocks", "lora"])
def test_only_trainable_tensors_leave_a_site_and_the_global_model_is_a_full_model(work, mode):
    from dermino.federated.simulation import simulate

    extra = ["train.last_k=1"] if mode == "last_blocks" else ["train.lora_rank=4", "train.lora_targets=[qkv,proj]"]
    cfg = cfg_for(work, mode, f"train.trainable={mode}", *extra)
    grids = []
    history = simulate(cfg, grid_hook=grids.append)
    grid = grids[0]
    assert history["trainable"] == mode
    # the server lists the tensors it trains in the train config record; each reply holds exactly those
    (names,) = {tuple(m.content.config_records["config"]["trainable-names"]) for m in grid.instructions}
    if mode == "lora":  # adapters on qkv/proj of both blocks (A and B) + the head's weight and bias
        assert all("lora_A" in n or "lora_B" in n or ".head.fc." in n for n in names)
        assert sum("lora_" in n for n in names) == 2 * 2 * 2 and sum(".head." in n for n in names) == 2
    else:  # the last of 2 blocks (index 0 of the trained tail), the final norm, the head
        assert {n.split(".")[0] for n in names} == {"blocks", "norm", "head"}
        assert all(n.startswith("blocks.0.") for n in names if n.startswith("blocks"))
    replies = [m for m in grid.sent if m.metadata.message_type == "train"]
    assert len(replies) == 3
    for msg in replies:
        assert not msg.has_error() and set(msg.content.config_records) == set()
        assert list(msg.content.array_records) == ["arrays"]
        assert tuple(msg.content.array_records["arrays"].keys()) == names

    # the saved global model (trained tensors + base reference) becomes a plain backbone + head
    full, classes, rnd = load_full_model(f"{cfg.out_dir}/global/latest.pt")
    assert rnd == 1 and classes == history["classes"]
    assert not any("lora" in k for k in full.state_dict())  # adapters merged into the weights
    saved = torch.load(f"{cfg.out_dir}/global/latest.pt", weights_only=True)
    assert tuple(saved["state"]) == names and saved["base"]["trainable"] == mode
    model = load_trainable(build_model(cfg, len(classes)), {k: v.numpy() for k, v in saved["state"].items()})
    df = load_manifests(cfg.data, cfg.out_dir)
    site = client_data(df, cfg.data, client_names(df, cfg.data)[0], classes)
    from dermino.data.images import read_rgb
    from dermino.features import eval_transform

    rows = site.rows("val")[:6]
    images = torch.stack([eval_transform(full.backbone, cfg.embed)(read_rgb(p))
                          for p in site.frame["image"].iloc[rows]])
    with torch.inference_mode():
        direct = torch.softmax(full(images), 1).double().numpy()
    federated = predict_proba(model, site_inputs(cfg, site)[rows])
    np.testing.assert_allclose(direct, federated, atol=1e-4)
    # the trained part moved away from the base backbone (an untouched merge would be a silent no-op)
    from dermino.federated.task import backbone

    base = backbone(cfg).state_dict()
    changed = [k for k, v in full.backbone.state_dict().items() if not torch.equal(v, base[k])]
    assert changed and all(k.startswith(("vit.blocks.1.", "vit.norm.") if mode == "last_blocks" else "vit.blocks.")
                           for k in changed)


def test_fedprox_pulls_only_the_trainable_tensors(work):
    cfg = cfg_for(work, "prox", "train.trainable=lora", "train.lora_rank=4")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 17, 192, generator=gen).numpy()  # tokens entering block 0 (16 patches + CLS)
    y = np.arange(16) % 4
    start = trainable_state(build_model(cfg, 4))
    frozen = {k: v.clone() for k, v in build_model(cfg, 4).state_dict().items() if "lora_" not in k and ".head." not in k}
    moved = {}
    for mu in (0.0, 100.0):
        model = build_model(cfg, 4)
        train_head(model, x, y, epochs=5, lr=0.05, batch_size=8, proximal_mu=mu)
        assert trainable_names(model) == list(start)
        now = trainable_state(model)
        moved[mu] = sum(float((now[k] - start[k]).norm() ** 2) for k in start) ** 0.5
        for k, v in model.state_dict().items():  # the frozen backbone never changes
            if k in frozen:
                assert torch.equal(v, frozen[k]), k
    assert moved[0.0] > 0 and moved[100.0] < 0.5 * moved[0.0]


def test_a_site_refuses_a_server_training_other_tensors(work):
    head_cfg = cfg_for(work, "mismatch")
    lora_cfg = cfg_for(work, "mismatch", "train.trainable=lora")
    df = load_manifests(head_cfg.data, head_cfg.out_dir)
    classes = class_names(df, head_cfg.data, client_names(df, head_cfg.data))
    arrays = {k: v.numpy() for k, v in trainable_state(build_model(head_cfg, len(classes))).items()}
    with pytest.raises(ValueError, match="trainable tensors do not match"):
        load_trainable(build_model(lora_cfg, len(classes)), arrays)
