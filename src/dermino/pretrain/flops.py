"""Analytic FLOP count of one pretraining image, for images/s -> model-FLOPs utilisation (MFU).

Counted as 2 FLOPs per multiply-add of the matmuls (the bulk of the work); norms, softmax
and activations are ignored, as in the usual MFU convention (PaLM, nanoGPT). Training costs
3x the forward for the student (forward + backward) and 1x for the teacher (forward only).
Check: ViT-B/14 with 2x224 + 8x98 crops gives about 0.5 TFLOP/image (a hand count of the
same matmuls gives ~0.45).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

#: dense peak TFLOP/s by (device-name fragment, precision); the first match wins
PEAK_TFLOPS: list[tuple[str, str, float]] = [
    ("H200", "bf16", 989.0), ("H100", "bf16", 989.0), ("A100", "bf16", 312.0), ("L40", "bf16", 181.0),
    ("H200", "fp16", 989.0), ("H100", "fp16", 989.0), ("A100", "fp16", 312.0),
    ("H200", "fp32", 67.0), ("H100", "fp32", 67.0), ("A100", "fp32", 19.5),
]
#: fp32 FLOPs per core per cycle by vector extension (two FMA units: 2 x 2 x lanes)
CPU_FLOPS_PER_CYCLE = (("avx512f", 64), ("avx2", 32), ("sse2", 8))


def cpu_peak_tflops(threads: int | None = None) -> float:
    """Theoretical fp32 peak of the cores torch uses: threads x clock x FLOPs per cycle.

    Read from /proc/cpuinfo (Linux); elsewhere assume 2.5 GHz and AVX2. A theoretical peak keeps
    MFU below 100 % (a "typical throughput" figure would not).
    """
    threads = threads or torch.get_num_threads()
    mhz, flags = 2500.0, "avx2"
    try:
        info = Path("/proc/cpuinfo").read_text()
        mhz_values = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", info, re.M)]
        max_freq = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
        if max_freq.is_file():
            mhz_values.append(int(max_freq.read_text()) / 1000)
        mhz = max(mhz_values, default=mhz)
        found = re.search(r"^flags\s*:(.*)$", info, re.M)
        flags = found.group(1) if found else flags
    except OSError:
        pass
    per_cycle = next((n for flag, n in CPU_FLOPS_PER_CYCLE if f" {flag}" in f" {flags} "), 8)
    return threads * mhz * 1e6 * per_cycle / 1e12


def vit_forward_flops(
    tokens: int, dim: int, depth: int, mlp_ratio: float = 4.0, patch_size: int = 14, n_prefix: int = 1
) -> float:
    """Forward FLOPs of a ViT on one image with ``tokens`` tokens (patches + ``n_prefix``
    class/register tokens, which skip the patch embedding)."""
    per_block = 2 * tokens * dim * dim * (4 + 2 * mlp_ratio)  # qkv + proj + mlp
    per_block += 2 * 2 * tokens * tokens * dim  # q @ k^T and attn @ v
    patch_embed = 2 * (tokens - n_prefix) * dim * 3 * patch_size * patch_size
    return depth * per_block + patch_embed


def head_forward_flops(in_dim: int, hidden: int, bottleneck: int, out_dim: int, n_layers: int = 3) -> float:
    """Forward FLOPs of a DINO/iBOT head on one token."""
    dims = [in_dim] + [hidden] * (n_layers - 1) + [bottleneck]
    mlp = sum(2 * a * b for a, b in zip(dims[:-1], dims[1:], strict=True))
    return mlp + 2 * bottleneck * out_dim


def pretrain_flops_per_image(
    dim: int,
    depth: int,
    global_size: int,
    local_size: int,
    n_local: int,
    n_global: int = 2,
    patch_size: int = 14,
    mlp_ratio: float = 4.0,
    n_prefix: int = 1,
    head: tuple[int, int, int, int] | None = (2048, 256, 65536, 3),
    ibot: bool = True,
    mask_fraction: float = 0.15,
) -> float:
    """Training FLOPs per source image: student fwd+bwd on all crops, teacher fwd on global crops.

    ``mask_fraction`` is the expected fraction of global patches masked (0.5 of crops x mean
    ratio 0.3 = 0.15); the iBOT head runs on those tokens for student and teacher.
    """
    g_patches = (global_size // patch_size) ** 2
    l_patches = (local_size // patch_size) ** 2
    g = vit_forward_flops(g_patches + n_prefix, dim, depth, mlp_ratio, patch_size, n_prefix)
    loc = vit_forward_flops(l_patches + n_prefix, dim, depth, mlp_ratio, patch_size, n_prefix)
    student = n_global * g + n_local * loc
    teacher = n_global * g
    if head is not None:
        h = head_forward_flops(dim, *head)
        student += (n_global + n_local) * h
        teacher += n_global * h
        if ibot:
            masked = n_global * g_patches * mask_fraction
            student += masked * h
            teacher += masked * h
    return 3 * student + teacher


def peak_tflops(device: torch.device, precision: str, override: float | None = None) -> float:
    """Peak TFLOP/s to compare against: ``override`` if given, else a table by GPU name, or the
    CPU's theoretical peak."""
    if override:
        return float(override)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        prec = "fp32" if precision == "fp32" else precision
        for frag, p, tf in PEAK_TFLOPS:
            if frag in name and p == prec:
                return tf
        return 100.0
    return cpu_peak_tflops()
