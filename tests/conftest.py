"""Test configuration: GPU requirement on the GPU machine, strict dtype promotion."""

from __future__ import annotations

import os

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
# Oracles in float32 arithmetic: on GPUs the default would be TF32 for plain matmuls in test networks.
jax.config.update("jax_default_matmul_precision", "highest")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a GPU and the CUDA module")
    config.addinivalue_line("markers", "sanitize: small CUDA cases run under compute-sanitizer")


def pytest_collection_modifyitems(config, items):
    """GPU tests skip without a GPU, unless DELTAJAX_REQUIRE_GPU=1 turns that into a failure."""
    has_gpu = any(d.platform == "gpu" for d in jax.devices())
    if has_gpu:
        return
    if os.environ.get("DELTAJAX_REQUIRE_GPU") == "1":
        raise pytest.UsageError("DELTAJAX_REQUIRE_GPU=1 but JAX sees no GPU: " + str(jax.devices()))
    skip = pytest.mark.skip(reason="no GPU (set DELTAJAX_REQUIRE_GPU=1 to make this a failure)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
