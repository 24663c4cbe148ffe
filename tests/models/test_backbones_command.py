"""``dermino backbones``: every registered name listed, with its card's facts and measured sizes."""

from __future__ import annotations

import json

from dermino import cli
from dermino.commands.backbones import backbone_rows, format_rows
from dermino.models import list_backbones
from dermino.models.baselines import CARDS


def test_lists_every_registered_model_and_the_unreleased_slot(capsys):
    assert cli.main(["backbones", "--no-build", "--format", "json"]) in (0, None)
    rows = json.loads(capsys.readouterr().out)
    names = {r["name"] for r in rows}
    assert set(list_backbones()) | {"dermfm_zero"} == names
    by = {r["name"]: r for r in rows}
    assert by["resnext101_32x8d"]["sha256"] == "8ba56ff5" and by["dermfm_zero"]["status"] == "unreleased"
    assert by["clip_vit_b16"]["text_tower"] and not by["siglip_vit_b16"]["text_tower"]
    assert "tokenizer" in by["siglip_vit_b16"]["text_note"]
    assert by["medsiglip_448"]["preprocess"]["image_size"] == 448
    table = format_rows(rows, "table")
    assert "weights not public" in table and "https://download.pytorch.org/models/resnext101_32x8d" in table


def test_measured_sizes_come_from_the_built_model():
    (row,) = backbone_rows(["dinov3_vits16"])
    assert row["embed_dim"] == 384 and 20 < row["params_m"] < 23 and row["proj_dim"] is None
    md = format_rows([row], "markdown")
    assert md.splitlines()[2].startswith("| dinov3_vits16 | DINOv3 | timm | 21.")
    assert CARDS["dinov3_vits16"].preprocess.image_size == 256
