"""Skin-tone estimate from non-lesion skin pixels: the Individual Typology Angle (ITA).

Most dermoscopy datasets carry no Fitzpatrick type, so fairness by skin tone needs an
estimate. ITA = arctan((L* - 50) / b*) * 180 / pi on CIELAB (D65) of skin pixels, binned
into the usual categories (Chardon et al. 1991; Del Bino & Bernerd 2013):
very light > 55 >= light > 41 >= intermediate > 28 >= tan > 10 >= brown > -30 >= dark.

Which pixels: outside the lesion mask when there is one, else a border ring of the image
(lesions are centred in dermoscopy). Very dark pixels (hair, vignette corners, L* < 20),
near-white pixels (specular glare, L* > 95) and unsaturated ones (gel/bubbles, chroma < 3)
are dropped. The estimate uses the *median* L* and b* of what remains (robust to leftover
hair and vessels), then the formula; arctan2 keeps it defined when b* is close to 0.
This is an estimate of the imaged skin's colour, which dermoscope lighting shifts; report
it as such, not as a Fitzpatrick type.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from dermino.data.images import read_rgb
from dermino.data.manifest import resolve
from dermino.progress import tqdm

#: (lower bound exclusive, name) from light to dark; below the last bound is "dark"
ITA_BINS: list[tuple[float, str]] = [
    (55.0, "very light"), (41.0, "light"), (28.0, "intermediate"), (10.0, "tan"), (-30.0, "brown"),
]
ITA_CATEGORIES = [name for _, name in ITA_BINS] + ["dark"]

_M_RGB_TO_XYZ = np.array([
    [0.4124564, 0.3575761, 0.1804375],
    [0.2126729, 0.7151522, 0.0721750],
    [0.0193339, 0.1191920, 0.9503041],
])
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """8-bit (or [0, 1] float) sRGB ``(..., 3)`` -> CIELAB under D65 ``(..., 3)``."""
    c = np.asarray(rgb, dtype=np.float64)
    if np.issubdtype(np.asarray(rgb).dtype, np.integer):
        c = c / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = lin @ _M_RGB_TO_XYZ.T / _WHITE_D65
    eps, kappa = 216 / 24389, 24389 / 27
    f = np.where(xyz > eps, np.cbrt(xyz), (kappa * xyz + 16) / 116)
    lab_l = 116 * f[..., 1] - 16
    lab_a = 500 * (f[..., 0] - f[..., 1])
    lab_b = 200 * (f[..., 1] - f[..., 2])
    return np.stack([lab_l, lab_a, lab_b], axis=-1)


def ita(lightness: float | np.ndarray, b: float | np.ndarray) -> float | np.ndarray:
    """ITA in degrees (arctan2 form: equals arctan((L-50)/b) for b > 0)."""
    return np.degrees(np.arctan2(np.asarray(lightness) - 50.0, np.asarray(b)))


def ita_category(value: float) -> str:
    """Bin an ITA angle; NaN -> ``""`` (unknown)."""
    if value is None or not math.isfinite(value):
        return ""
    for bound, name in ITA_BINS:
        if value > bound:
            return name
    return "dark"


def skin_pixel_mask(
    lab: np.ndarray, lesion: np.ndarray | None, ring: float = 0.15
) -> np.ndarray:
    """Boolean (H, W): pixels that are probably plain skin."""
    h, w = lab.shape[:2]
    if lesion is not None:
        if lesion.shape != (h, w):
            raise ValueError(f"mask is {lesion.shape[1]}x{lesion.shape[0]}, image {w}x{h}")
        region = ~lesion
    else:
        rh, rw = max(1, int(h * ring)), max(1, int(w * ring))
        region = np.zeros((h, w), dtype=bool)
        region[:rh], region[-rh:], region[:, :rw], region[:, -rw:] = True, True, True, True
    lightness = lab[..., 0]
    chroma = np.hypot(lab[..., 1], lab[..., 2])
    return region & (lightness >= 20) & (lightness <= 95) & (chroma >= 3)


def estimate_ita(
    image: Image.Image | np.ndarray, mask: Image.Image | np.ndarray | None = None,
    ring: float = 0.15, min_pixels: int = 50,
) -> float:
    """ITA of the non-lesion skin of one image; NaN when too few skin pixels remain."""
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    lab = srgb_to_lab(rgb)
    lesion = None
    if mask is not None:
        m = mask
        if isinstance(m, Image.Image):
            m = m.convert("L").resize((rgb.shape[1], rgb.shape[0]), Image.NEAREST)
        lesion = np.asarray(m) > (127 if np.asarray(m).max() > 1 else 0)
    sel = skin_pixel_mask(lab, lesion, ring)
    if sel.sum() < min_pixels:
        return math.nan
    return float(ita(np.median(lab[..., 0][sel]), np.median(lab[..., 2][sel])))


def estimate_skin_tone(df: pd.DataFrame, progress: bool = True) -> pd.DataFrame:
    """``ita`` and ``skin_tone`` (category) for every manifest row, using its mask if any."""
    values = []
    for i, row in tqdm(list(enumerate(df.itertuples(index=False))), desc="skin tone",
                       disable=not progress, leave=False):
        img_path = resolve(df, row.image)
        if img_path is None:
            raise ValueError(f"manifest row {i}: empty 'image' cell")
        mask_path = resolve(df, getattr(row, "mask", ""))
        mask = Image.open(mask_path) if mask_path is not None and Path(mask_path).is_file() else None
        values.append(estimate_ita(read_rgb(img_path), mask))
    return pd.DataFrame(
        {"ita": values, "skin_tone": [ita_category(v) for v in values]}, index=df.index
    )
