"""Multi-crop with the photometric half moved off the loader: crops on the CPU, colour on the device.

Why: the DINOv2 recipe (2 global + 8 local crops, each jittered, maybe greyed, blurred and
solarised) costs ~30 ms of CPU per image through PIL/torchvision, i.e. ~30 images/s per core,
while a GPU step consumes hundreds of images/s. The geometric part (random resized crop + flip)
is cheap and must see the full image, so it stays in the loader; the photometric part is
per-pixel arithmetic that a device does for a whole batch in microseconds. The loader draws
every random parameter (from the per-sample seeded torch RNG, so batches stay reproducible and
resumable), ships uint8 crops (4x less to copy than float) plus a parameter row per crop, and
``apply_photometric`` applies them batched wherever the batch lands.

The distribution is the recipe's: ColorJitter (random order of brightness, contrast,
saturation, hue with torchvision's factor ranges and formulas), RandomGrayscale, a 9-tap
Gaussian blur with sigma in [0.1, 2] and reflect padding, solarisation at 128/255. Values
differ from the PIL path by uint8 rounding between ops (PIL rounds after each op).
"""

from __future__ import annotations

import torch
from PIL import Image
from torch import Tensor
from torch.nn import functional as F
from torchvision.transforms import v2

from dermino.data.transforms import CropsConfig, _check_sizes

#: columns of a crop's parameter row
PARAMS = ("jitter", "brightness", "contrast", "saturation", "hue", "o0", "o1", "o2", "o3",
          "gray", "blur", "sigma", "solarize")
_COL = {k: i for i, k in enumerate(PARAMS)}
_GRAY = (0.2989, 0.587, 0.114)
BLUR_TAPS = 9


def _uniform(lo: float, hi: float) -> float:
    return float(torch.empty(1).uniform_(lo, hi))


def draw_params(cfg: CropsConfig, blur_p: float, solarize_p: float) -> Tensor:
    """One crop's photometric parameters, drawn from torch's global RNG (seed it per sample)."""
    row = torch.zeros(len(PARAMS))
    if float(torch.rand(1)) < cfg.jitter_p:
        row[_COL["jitter"]] = 1
        row[_COL["brightness"]] = _uniform(max(0.0, 1 - cfg.brightness), 1 + cfg.brightness)
        row[_COL["contrast"]] = _uniform(max(0.0, 1 - cfg.contrast), 1 + cfg.contrast)
        row[_COL["saturation"]] = _uniform(max(0.0, 1 - cfg.saturation), 1 + cfg.saturation)
        row[_COL["hue"]] = _uniform(-cfg.hue, cfg.hue)
        row[_COL["o0"]: _COL["o3"] + 1] = torch.randperm(4).float()
    row[_COL["gray"]] = float(float(torch.rand(1)) < cfg.grayscale_p)
    if float(torch.rand(1)) < blur_p:
        row[_COL["blur"]] = 1
        row[_COL["sigma"]] = _uniform(0.1, 2.0)
    row[_COL["solarize"]] = float(float(torch.rand(1)) < solarize_p)
    return row


class GeometricMultiCrop:
    """PIL image -> uint8 crops (random resized crop + flip) and one parameter row per crop.

    Output: ``{"global": [2 x (3,G,G) uint8], "local": [n x (3,L,L) uint8], "global_photo": (2, P),
    "local_photo": (n, P)}``; ``apply_photometric`` finishes the views on the device.
    """

    def __init__(self, cfg: CropsConfig | None = None):
        self.cfg = cfg = cfg or CropsConfig()
        _check_sizes(cfg)
        bicubic = v2.InterpolationMode.BICUBIC
        flip = v2.RandomHorizontalFlip(p=cfg.flip_p)
        self.g_crop = v2.Compose([v2.RandomResizedCrop(cfg.global_size, scale=cfg.global_scale,
                                                       interpolation=bicubic, antialias=True), flip])
        self.l_crop = v2.Compose([v2.RandomResizedCrop(cfg.local_size, scale=cfg.local_scale,
                                                       interpolation=bicubic, antialias=True), flip])

    def __call__(self, image: Image.Image | Tensor) -> dict[str, object]:
        cfg = self.cfg
        x = image if isinstance(image, Tensor) else v2.functional.pil_to_tensor(image)  # uint8 (3, H, W)
        glob, gp = [], []
        for blur_p, sol_p in ((cfg.blur_p_global1, 0.0), (cfg.blur_p_global2, cfg.solarize_p_global2)):
            glob.append(self.g_crop(x))
            gp.append(draw_params(cfg, blur_p, sol_p))
        loc, lp = [], []
        for _ in range(cfg.n_local):
            loc.append(self.l_crop(x))
            lp.append(draw_params(cfg, cfg.blur_p_local, 0.0))
        empty = torch.zeros(0, len(PARAMS))
        return {"global": glob, "local": loc, "global_photo": torch.stack(gp),
                "local_photo": torch.stack(lp) if lp else empty}


# --------------------------------------------------------------------------- device side


def _gray(x: Tensor) -> Tensor:
    r, g, b = x.unbind(1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def _blend(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    return (f * a + (1 - f) * b).clamp_(0, 1)


def _rgb_to_hsv(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    delta = maxc - minc
    s = delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    d = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, torch.remainder(h / 6.0, 1.0), torch.zeros_like(h))
    return h, s, maxc


def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    h6 = h * 6.0
    i = torch.floor(h6)
    f = h6 - i
    i = i.long().remainder(6).unsqueeze(1)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r = torch.stack([v, q, p, p, t, v], 1).gather(1, i)
    g = torch.stack([t, v, v, q, p, p], 1).gather(1, i)
    b = torch.stack([p, p, t, v, v, q], 1).gather(1, i)
    return torch.cat([r, g, b], 1)


def adjust_brightness(x: Tensor, f: Tensor) -> Tensor:
    return (x * f.view(-1, 1, 1, 1)).clamp_(0, 1)


def adjust_contrast(x: Tensor, f: Tensor) -> Tensor:
    mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean, f.view(-1, 1, 1, 1))


def adjust_saturation(x: Tensor, f: Tensor) -> Tensor:
    return _blend(x, _gray(x), f.view(-1, 1, 1, 1))


def adjust_hue(x: Tensor, f: Tensor) -> Tensor:
    h, s, v = _rgb_to_hsv(x)
    h = torch.remainder(h + f.view(-1, 1, 1), 1.0)
    return _hsv_to_rgb(h, s, v)


_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def gaussian_blur(x: Tensor, sigma: Tensor, taps: int = BLUR_TAPS) -> Tensor:
    """Separable Gaussian blur with one sigma per image (reflect padding, like torchvision)."""
    n, c, h, w = x.shape
    half = (taps - 1) / 2
    pos = torch.linspace(-half, half, taps, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (pos.view(1, -1) / sigma.view(-1, 1).to(x.dtype)) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n*c, taps)
    pad = taps // 2
    y = F.pad(x.reshape(1, n * c, h, w), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k.view(n * c, 1, 1, taps), groups=n * c)
    y = F.conv2d(y, k.view(n * c, 1, taps, 1), groups=n * c)
    return y.view(n, c, h, w)


def apply_photometric(crops: Tensor, params: Tensor, mean: tuple[float, ...], std: tuple[float, ...],
                      sync_free: bool | None = None) -> Tensor:
    """uint8 crops (N, 3, H, W) + parameter rows (N, P) -> normalised float32 views, batched.

    ``sync_free`` (default: on any device but the CPU) computes every op on every crop and keeps
    it where wanted, so no ``nonzero`` makes the host wait; on the CPU only the chosen crops are done.
    """
    sync_free = crops.device.type != "cpu" if sync_free is None else sync_free
    if crops.dtype != torch.uint8:
        raise TypeError(f"apply_photometric expects uint8 crops, got {crops.dtype}")
    x = crops.float().div_(255.0)
    p = params.to(x.device, torch.float32)
    jit = p[:, _COL["jitter"]] > 0
    factors = p[:, _COL["brightness"]: _COL["hue"] + 1]
    order = p[:, _COL["o0"]: _COL["o3"] + 1].long()
    blur = p[:, _COL["blur"]] > 0
    if not sync_free:  # only the crops that need an op: least work
        for pos in range(4):  # the op at each position of each crop's random order
            for op_id, op in enumerate(_OPS):
                idx = torch.nonzero(jit & (order[:, pos] == op_id)).squeeze(1)
                if idx.numel():
                    x[idx] = op(x[idx], factors[idx, op_id])
    else:  # every op on every crop, kept where wanted: no nonzero(), so no host-device sync
        for pos in range(4):
            for op_id, op in enumerate(_OPS):
                use = (jit & (order[:, pos] == op_id)).view(-1, 1, 1, 1)
                x = torch.where(use, op(x, factors[:, op_id]), x)
    x = torch.where((p[:, _COL["gray"]] > 0).view(-1, 1, 1, 1), _gray(x).expand_as(x), x)
    if not sync_free:
        idx = torch.nonzero(blur).squeeze(1)
        if idx.numel():
            x[idx] = gaussian_blur(x[idx], p[idx, _COL["sigma"]])
    else:
        sigma = torch.where(blur, p[:, _COL["sigma"]], torch.ones_like(p[:, 0]))
        x = torch.where(blur.view(-1, 1, 1, 1), gaussian_blur(x, sigma), x)
    sol = (p[:, _COL["solarize"]] > 0).view(-1, 1, 1, 1)
    x = torch.where(sol & (x >= 128 / 255), 1.0 - x, x)
    # per channel with Python scalars: a device tensor built from host values would be a blocking copy
    return torch.stack([(x[:, c] - mean[c]) / std[c] for c in range(3)], 1)


def finish_batch(batch: dict, mean: tuple[float, ...], std: tuple[float, ...]) -> dict:
    """Apply the shipped photometric parameters to a collated batch (no-op for finished batches)."""
    if "global_photo" not in batch:
        return batch
    out = dict(batch)
    out["global_crops"] = apply_photometric(batch["global_crops"], out.pop("global_photo"), mean, std)
    local_photo = out.pop("local_photo")
    if batch.get("local_crops") is not None:
        out["local_crops"] = apply_photometric(batch["local_crops"], local_photo, mean, std)
    return out


def multicrop_transform(cfg: CropsConfig):
    """The loader's transform for ``cfg.photometric``: finished float views ("loader") or uint8
    crops plus parameters finished on the device ("device", see ``finish_batch``)."""
    from dermino.data.transforms import MultiCropTransform

    if cfg.photometric == "loader":
        return MultiCropTransform(cfg)
    if cfg.photometric == "device":
        return GeometricMultiCrop(cfg)
    raise ValueError(f"crops.photometric must be 'loader' or 'device', got {cfg.photometric!r}")
