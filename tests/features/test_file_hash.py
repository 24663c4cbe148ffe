"""file_hash: content hashes that say whether two files hold the same thing."""

from __future__ import annotations

import hashlib

import torch
from safetensors.torch import save_file

from dermino.features.cache import file_hash


def test_plain_file_is_its_bytes(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("a,b\n1,2\n")
    assert file_hash(p) == hashlib.sha256(p.read_bytes()).hexdigest()


def test_safetensors_hash_follows_the_tensors_not_the_header_order(tmp_path):
    t = {"prototypes": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b": torch.ones(2)}
    a, b, c = tmp_path / "a.safetensors", tmp_path / "b.safetensors", tmp_path / "c.safetensors"
    save_file(t, str(a), metadata={"encoder": "x", "pooling": "mean", "classes": "[1, 2]"})
    save_file(dict(reversed(list(t.items()))), str(b), metadata={"classes": "[1, 2]", "pooling": "mean", "encoder": "x"})
    assert file_hash(a) == file_hash(b)
    changed = {**t, "b": torch.tensor([1.0, 1.0 + 1e-6])}
    save_file(changed, str(c), metadata={"encoder": "x", "pooling": "mean", "classes": "[1, 2]"})
    assert file_hash(c) != file_hash(a)
    d = tmp_path / "d.safetensors"
    save_file(t, str(d), metadata={"encoder": "y", "pooling": "mean", "classes": "[1, 2]"})
    assert file_hash(d) != file_hash(a)  # metadata is content too
