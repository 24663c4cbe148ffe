"""Files we load are data: a crafted pickle in a checkpoint or a shared head must not run code."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from dermino.files import UnsafeFileError, atomic_dir, atomic_path, load_torch, save_atomic
from dermino.pretrain.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from dermino.segment.predict import load_run


class _Payload:
    """Unpickling this calls ``os.system`` (the classic pickle exploit)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious(path, marker):
    with open(path, "wb") as fh:
        pickle.dump({"model": _Payload(marker), "head": _Payload(marker), "config": {}}, fh)


def test_malicious_checkpoint_runs_no_code_and_names_the_file(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoints" / "step_00000002.pt"
    path.parent.mkdir()
    _malicious(path, marker)
    with pytest.raises(UnsafeFileError, match="step_00000002.pt"):
        load_checkpoint(path)
    assert not marker.exists(), "unpickling ran the payload"


def test_malicious_segmentation_head_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    _malicious(tmp_path / "head_best.pt", marker)
    with pytest.raises(UnsafeFileError, match="head_best.pt"):
        load_run(tmp_path)
    assert not marker.exists()


def test_checkpoint_with_rng_state_loads_weights_only(tmp_path):
    """A real checkpoint body (RNG states included) round-trips through the safe loader."""
    torch.manual_seed(3)
    state = {"model": {"w": torch.randn(3)}, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "betas": (0.9, 0.99)}]},
             "config": {"a": {"b": [1, 2]}}, "data_state": (1, 8)}
    path = save_checkpoint(tmp_path, 5, state)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    import random

    import numpy as np

    set_rng_state(loaded["rng"][0])
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(rng_state() | loaded["rng"][0])
    b = (random.random(), np.random.rand(), torch.rand(1).item())
    assert a == b


def test_atomic_path_removes_temp_on_error_and_keeps_old(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]
    save_atomic({"t": torch.ones(1)}, tmp_path / "t.pt")
    assert torch.equal(load_torch(tmp_path / "t.pt")["t"], torch.ones(1))


def test_atomic_dir_swaps_whole_folders_and_keeps_the_old_one_on_error(tmp_path):
    target = tmp_path / "clf"
    with atomic_dir(target) as tmp:
        (tmp / "a.json").write_text("1")
        (tmp / "b.bin").write_bytes(b"x")
    assert sorted(p.name for p in target.iterdir()) == ["a.json", "b.bin"]
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a.json").write_text("2")
        raise RuntimeError("killed mid-write")
    assert (target / "a.json").read_text() == "1" and (target / "b.bin").is_file()
    with atomic_dir(target) as tmp:
        (tmp / "a.json").write_text("3")
    assert [p.name for p in target.iterdir()] == ["a.json"]  # replaced as a whole, no stale files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clf"]  # no temporary or old folders left


# ---------------------------------------------------------------- every place a file is read
def _tiny_classifier_folder(tmp_path):
    from _serve_fixtures import tiny_classifier
    from dermino.classifier.model import save_classifier

    return save_classifier(tiny_classifier(), tmp_path / "classifier")


def _plant_classifier(tmp_path, marker):
    from dermino.classifier.model import load_classifier

    folder = _tiny_classifier_folder(tmp_path)
    _malicious(folder / "model.safetensors", marker)
    return folder / "model.safetensors", lambda: load_classifier(folder)


def _plant_index(tmp_path, marker):
    from dermino.serve.index import CaseIndex

    index = CaseIndex(dim=4)
    index.add(np.eye(2, 4, dtype=np.float32), [{"image": "a.jpg", "label": "x"}, {"image": "b.jpg", "label": "y"}],
              [b"\xff\xd8jpeg", b"\xff\xd8jpeg"])
    folder = index.save(tmp_path / "index")
    _malicious(folder / "embeddings.safetensors", marker)
    return folder / "embeddings.safetensors", lambda: CaseIndex.load(folder)


def _plant_backbone_weights(tmp_path, marker):
    from dermino.models import create

    path = tmp_path / "teacher.pt"
    _malicious(path, marker)
    return path, lambda: create("dermino_vit_tiny_14", weights=str(path), depth=1, embed_dim=64, num_heads=2,
                                img_size=56)


def _plant_exported_backbone(tmp_path, marker):
    from dermino.models.weights import load_exported

    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "config.json").write_text('{"dermino": {"spec": {"embed_dim": 64, "depth": 1, "num_heads": 2}}}')
    _malicious(folder / "model.safetensors", marker)
    return folder / "model.safetensors", lambda: load_exported(folder)


def _plant_hub_cache(tmp_path, marker):
    from dermino.models import create
    from dermino.models.weights import load_dinov2_hub

    hub = tmp_path / "hub"
    path = hub / "checkpoints" / "dinov2_vits14_pretrain.pth"
    path.parent.mkdir(parents=True)
    _malicious(path, marker)
    previous = torch.hub.get_dir()

    def load():
        torch.hub.set_dir(str(hub))
        try:  # the file is in the cache: nothing is downloaded
            load_dinov2_hub(create("dermino_vit_tiny_14", depth=1, embed_dim=64, num_heads=2, img_size=56),
                            "dinov2_vits14")
        finally:
            torch.hub.set_dir(previous)

    return path, load


def _plant_federated_head(tmp_path, marker):
    from dermino.federated.server_app import load_global

    path = tmp_path / "global" / "round_001.pt"
    path.parent.mkdir()
    _malicious(path, marker)
    return path, lambda: load_global(path)


def _plant_federated_model(tmp_path, marker):
    from dermino.federated.trainable import load_full_model

    path = tmp_path / "global" / "latest.pt"
    path.parent.mkdir()
    _malicious(path, marker)
    return path, lambda: load_full_model(path)


def _plant_study_file(tmp_path, marker):
    from dermino.study.store import StudyStore

    folder = tmp_path / "study"
    folder.mkdir()
    _malicious(folder / "study.json", marker)
    return folder / "study.json", lambda: StudyStore(folder)


def _plant_study_db(tmp_path, marker):
    from dermino.study.store import StudyStore

    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "study.json").write_text("{}")
    _malicious(folder / "study.db", marker)
    return folder / "study.db", lambda: StudyStore(folder)


PLACES = {
    "classifier": _plant_classifier,
    "index": _plant_index,
    "backbone weights": _plant_backbone_weights,
    "exported backbone": _plant_exported_backbone,
    "torch hub cache": _plant_hub_cache,
    "federated head": _plant_federated_head,
    "federated full model": _plant_federated_model,
    "study.json": _plant_study_file,
    "study database": _plant_study_db,
}


@pytest.mark.parametrize("place", sorted(PLACES))
def test_a_planted_pickle_runs_no_code_anywhere(tmp_path, place):
    marker = tmp_path / "pwned"
    path, load = PLACES[place](tmp_path, marker)
    with pytest.raises(Exception) as info:
        load()
    assert not marker.exists(), f"{place}: loading {path.name} ran the payload"
    assert path.name in str(info.value) or path.parent.name in str(info.value), info.value
    # positive control: the very same file DOES run code when unpickled the unsafe way
    with open(path, "rb") as fh:
        pickle.load(fh)
    assert marker.exists(), "the planted payload is not live; the test above proves nothing"


def test_cli_reports_bad_weight_files_in_one_line(tmp_path, capsys):
    from _serve_fixtures import ham_images
    from dermino.cli import _expected, main
    from dermino.models.weights import WeightsError

    folder = _tiny_classifier_folder(tmp_path)
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)  # truncated / not safetensors
    rc = main(["explain", str(ham_images(1)[0]), "--classifier", str(folder), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "model.safetensors" in err and len(err.splitlines()) == 1, err
    assert _expected(WeightsError("checkpoint does not match the model")) and not _expected(RuntimeError("bug"))
