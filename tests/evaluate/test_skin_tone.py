"""ITA on known colours against an independent sRGB -> XYZ -> Lab computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from dermino.evaluate.skin_tone import (
    ITA_CATEGORIES,
    estimate_ita,
    estimate_skin_tone,
    ita_category,
    srgb_to_lab,
)


def ref_lab(r: int, g: int, b: int) -> tuple[float, float, float]:
    """Scalar CIE formulas, written out (IEC 61966-2-1 sRGB, CIE 1976 L*a*b*, D65)."""

    def lin(v):
        v = v / 255
        return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4

    rl, gl, bl = lin(r), lin(g), lin(b)
    x = 0.4124564 * rl + 0.3575761 * gl + 0.1804375 * bl
    y = 0.2126729 * rl + 0.7151522 * gl + 0.0721750 * bl
    z = 0.0193339 * rl + 0.1191920 * gl + 0.9503041 * bl

    def f(t):
        return t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29

    fx, fy, fz = f(x / 0.95047), f(y / 1.0), f(z / 1.08883)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


COLOURS = [(255, 224, 196), (241, 194, 167), (224, 172, 105), (198, 134, 66), (141, 85, 36), (80, 50, 30)]


@pytest.mark.parametrize("rgb", COLOURS)
def test_lab_and_ita_match_formula(rgb):
    lab = srgb_to_lab(np.array(rgb, dtype=np.uint8))
    ref = ref_lab(*rgb)
    np.testing.assert_allclose(lab, ref, atol=1e-6)
    img = np.tile(np.array(rgb, dtype=np.uint8), (40, 40, 1))
    expected = math.degrees(math.atan((ref[0] - 50) / ref[2]))
    assert estimate_ita(img) == pytest.approx(expected, abs=1e-6)


def test_known_points():
    # white is L=100, a=b=0; black L=0
    np.testing.assert_allclose(srgb_to_lab(np.array([255, 255, 255], np.uint8)), [100, 0, 0], atol=1e-3)
    np.testing.assert_allclose(srgb_to_lab(np.array([0, 0, 0], np.uint8)), [0, 0, 0], atol=1e-9)


def test_categories():
    assert [ita_category(v) for v in (60, 55, 45, 41, 30, 20, 0, -30, -45)] == [
        "very light", "light", "light", "intermediate", "intermediate", "tan", "brown", "dark", "dark"
    ]
    assert ita_category(float("nan")) == ""
    assert len(ITA_CATEGORIES) == 6
    # the light and dark ends of the palette land in different bins
    light, dark = (estimate_ita(np.tile(np.array(c, np.uint8), (30, 30, 1))) for c in (COLOURS[0], COLOURS[4]))
    assert ita_category(light) == "very light" and ita_category(dark) in ("brown", "dark")


def test_lesion_and_hair_are_excluded():
    skin = np.array(COLOURS[1], np.uint8)
    img = np.tile(skin, (60, 60, 1))
    img[20:40, 20:40] = (90, 40, 30)  # lesion
    img[:, 5] = (10, 10, 10)  # a hair
    mask = np.zeros((60, 60), np.uint8)
    mask[20:40, 20:40] = 255
    pure = estimate_ita(np.tile(skin, (60, 60, 1)))
    assert estimate_ita(img, Image.fromarray(mask)) == pytest.approx(pure, abs=1e-6)
    assert estimate_ita(img) == pytest.approx(pure, abs=1e-6)  # border ring, hair dropped
    assert math.isnan(estimate_ita(np.zeros((60, 60, 3), np.uint8)))  # nothing skin-like


def test_on_real_images_with_masks(shared_data):
    import pandas as pd

    from dermino.data.manifest import conform

    ids = ["ISIC_0024306", "ISIC_0024307", "ISIC_0024308"]
    df = conform(pd.DataFrame({
        "image": [f"images/{i}.jpg" for i in ids],
        "mask": [f"masks_200x150/{i}_segmentation.png" for i in ids],
    }))
    df.attrs["root"] = str(shared_data / "ham10000")
    out = estimate_skin_tone(df, progress=False)
    assert out["ita"].notna().all()
    assert set(out["skin_tone"]) <= set(ITA_CATEGORIES)
    assert ((out["ita"] > -90) & (out["ita"] < 90)).all()
