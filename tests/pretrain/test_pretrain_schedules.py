"""Schedule endpoints: lr warm-up + cosine, wd, teacher momentum and temperature, lr scaling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dermino.pretrain.schedules import cosine_schedule, scaled_lr, warmup_then_constant


def test_cosine_with_warmup_endpoints():
    s = cosine_schedule(1e-3, 1e-6, total_steps=100, warmup_steps=10)
    assert len(s) == 100
    assert s[0] == 0.0
    assert s[9] == pytest.approx(0.9e-3)  # linear warm-up reaches 90% on its last step
    assert s[10] == pytest.approx(1e-3)  # peak right after warm-up
    assert s[-1] == pytest.approx(1e-6)
    assert np.all(np.diff(s[10:]) <= 0)  # monotone decay


def test_weight_decay_and_momentum_endpoints():
    wd = cosine_schedule(0.04, 0.2, 50)
    assert wd[0] == pytest.approx(0.04) and wd[-1] == pytest.approx(0.2)
    assert wd[25] == pytest.approx(0.04 + 0.5 * 0.16 * (1 - math.cos(math.pi * 25 / 49)), rel=1e-9)
    m = cosine_schedule(0.992, 1.0, 50)
    assert m[0] == pytest.approx(0.992) and m[-1] == pytest.approx(1.0)


def test_teacher_temperature_warmup():
    t = warmup_then_constant(0.04, 0.07, total_steps=100, warmup_steps=30)
    assert t[0] == pytest.approx(0.04)
    assert t[29] == pytest.approx(0.07)
    assert np.all(t[30:] == 0.07)
    # warm-up longer than the run: clipped, still starts at 0.04
    short = warmup_then_constant(0.04, 0.07, total_steps=5, warmup_steps=30)
    assert len(short) == 5 and short[0] == pytest.approx(0.04)


def test_sqrt_lr_scaling():
    assert scaled_lr(2e-3, 1024) == pytest.approx(2e-3)
    assert scaled_lr(2e-3, 256) == pytest.approx(1e-3)


def test_bad_length_is_an_error():
    with pytest.raises(ValueError):
        cosine_schedule(1, 0, 0)
