"""Robust image reading: every bad-file case is read correctly or rejected naming the file."""

from __future__ import annotations

import logging
import struct
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermino.data.check import check_images
from dermino.data.images import ImageReadError, SafeImageLoader, load_or_none, read_mask, read_rgb


def _gradient(w=40, h=30) -> np.ndarray:
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.uint8)[:, None, None]
    return np.concatenate([np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)),
                           np.full((h, w, 1), 90, np.uint8)], axis=2)


def _jpeg(path, arr=None):
    Image.fromarray(_gradient() if arr is None else arr).save(path, quality=95)
    return path


def test_plain_jpeg(tmp_path):
    im = read_rgb(_jpeg(tmp_path / "ok.jpg"))
    assert im.mode == "RGB" and im.size == (40, 30)


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("empty.jpg", b"", "0 bytes"),
        ("notes.jpg", b"this is a text file, not a picture\n" * 10, "not an image"),
        ("garbage.png", bytes(range(256)) * 4, "not an image"),
    ],
)
def test_rejects_non_images(tmp_path, name, content, reason):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as info:
        read_rgb(p)
    assert info.value.path == str(p) and name in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="not found"):
        read_rgb(tmp_path / "nope.jpg")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated(tmp_path, fmt):
    full = tmp_path / f"full.{fmt.lower()}"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(full, format=fmt)
    data = full.read_bytes()
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as info:
        read_rgb(cut)
    assert str(cut) in str(info.value)


def test_cmyk_jpeg(tmp_path):
    p = tmp_path / "cmyk.jpg"
    rgb = Image.fromarray(np.full((20, 20, 3), (200, 40, 40), np.uint8))
    rgb.convert("CMYK").save(p, quality=100)
    assert Image.open(p).mode == "CMYK"
    im = read_rgb(p)
    assert im.mode == "RGB"
    assert np.allclose(np.asarray(im).reshape(-1, 3).mean(0), (200, 40, 40), atol=12)


def test_grayscale(tmp_path):
    p = tmp_path / "gray.png"
    Image.fromarray(np.full((10, 12), 77, np.uint8), mode="L").save(p)
    arr = np.asarray(read_rgb(p))
    assert arr.shape == (10, 12, 3) and (arr == 77).all()


def test_rgba_composited_on_white(tmp_path):
    arr = np.zeros((10, 10, 4), np.uint8)
    arr[..., 0] = 255  # red everywhere (alpha decides what shows)
    arr[:, :5, 3] = 255  # left half opaque red, right half fully transparent
    p = tmp_path / "rgba.png"
    Image.fromarray(arr, mode="RGBA").save(p)
    out = np.asarray(read_rgb(p))
    assert (out[:, :5] == (255, 0, 0)).all()
    assert (out[:, 5:] == (255, 255, 255)).all()  # not the hidden red, not black


def test_palette_with_transparency(tmp_path):
    im = Image.new("P", (4, 4), 0)
    im.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    im.putpixel((0, 0), 1)
    im.info["transparency"] = 0
    p = tmp_path / "pal.png"
    im.save(p, transparency=0)
    out = np.asarray(read_rgb(p))
    assert tuple(out[0, 0]) == (10, 200, 10) and tuple(out[3, 3]) == (255, 255, 255)


def test_16bit_grayscale_rescaled(tmp_path):
    arr = np.array([[0, 32896, 65535]], dtype=np.uint16)
    p = tmp_path / "deep.png"
    Image.fromarray(arr).save(p)
    assert Image.open(p).mode.startswith("I")
    out = np.asarray(read_rgb(p))
    # convert('RGB') alone would clip everything above 255 to white
    assert out[0, :, 0].tolist() == [0, 128, 255]


def test_exif_rotation_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # left half white
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    p = tmp_path / "rot.jpg"
    im.save(p, exif=exif, quality=100)
    out = np.asarray(read_rgb(p))
    assert out.shape == (40, 20, 3)  # width and height swapped
    assert out[:20].mean() > 200 and out[20:].mean() < 50  # white half now on top


def _bomb_png(path, w, h):
    """A valid PNG header claiming w x h pixels, with a tiny (incomplete) body."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def test_decompression_bomb_rejected_before_decoding(tmp_path):
    p = _bomb_png(tmp_path / "bomb.png", 60_000, 60_000)  # 3.6 gigapixels claimed
    with pytest.raises(ImageReadError, match="decompression bomb") as info:
        read_rgb(p)
    assert str(p) in str(info.value)
    small = _jpeg(tmp_path / "ok.jpg")
    with pytest.raises(ImageReadError, match="decompression bomb"):
        read_rgb(small, max_pixels=100)


def test_load_or_none_skip_logs(tmp_path, caplog):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    with caplog.at_level(logging.WARNING):
        assert load_or_none(bad, on_error="skip") is None
    assert "bad.jpg" in caplog.text
    with pytest.raises(ImageReadError):
        load_or_none(bad)
    with pytest.raises(ValueError):
        load_or_none(bad, on_error="ignore")
    loader = SafeImageLoader()
    assert loader(bad) is None and loader(_jpeg(tmp_path / "ok.jpg")) is not None
    assert [e.path for e in loader.skipped] == [str(bad)]


def test_read_mask(tmp_path):
    arr = np.zeros((5, 6), np.uint8)
    arr[1:3, 2:4] = 255
    p = tmp_path / "m.png"
    Image.fromarray(arr).save(p)
    m = read_mask(p)
    assert m.dtype == bool and m.sum() == 4


def test_check_images_reports_every_bad_file(tmp_path):
    _jpeg(tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes(b"")
    (tmp_path / "c.jpg").write_bytes(b"text")
    _bomb_png(tmp_path / "d.png", 50_000, 50_000)
    df = pd.DataFrame({"image": ["a.jpg", "b.jpg", "c.jpg", "d.png", "e.jpg"], "mask": ["", "", "", "", ""]})
    df.attrs["root"] = str(tmp_path)
    bad = check_images(df, workers=2, progress=False)
    assert [(b.row, b.column) for b in bad] == [(1, "image"), (2, "image"), (3, "image"), (4, "image")]
    assert all(b.path.startswith(str(tmp_path)) for b in bad)
