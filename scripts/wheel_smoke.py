"""Smoke and short exactness test of an installed deltajax wheel; run from outside the repository.

Checks that ``deltajax`` is imported from the installed wheel (not a source tree), that the native module of
the platform is loaded and its custom calls are in the compiled program, that one sparse conv [1, 6, 7, 8]
matches the pure-JAX reference, and that a small conv/BN/depthwise Flax net run by ``deltajax.run_clip`` at
threshold 0 over 12 frames [12, 1, 48, 64, 3] matches the dense net on every frame.

Usage: python scripts/wheel_smoke.py [--platform cpu|cuda]   (exits non-zero on any failure)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import deltajax
from deltajax import _native, backend, ops

FRAMES = 12


class Net(nn.Module):
    """conv 3x3 stride 2 -> BN -> relu6 -> depthwise residual -> global mean -> dense; [N, H, W, 3] -> [N, 10]."""

    @nn.compact
    def __call__(self, x):
        x = jax.nn.relu6(nn.BatchNorm(use_running_average=True)(nn.Conv(16, (3, 3), strides=2)(x)))
        x = x + jax.nn.relu6(nn.Conv(16, (3, 3), feature_group_count=16)(x))
        return nn.Dense(10)(jnp.mean(x, axis=(1, 2)))


def check_installed_wheel(platform: str) -> None:
    """deltajax comes from an installed wheel (not a source tree nor an editable install) and has native kernels
    for ``platform``."""
    where = Path(deltajax.__file__).resolve()
    if (where.parents[1] / "CMakeLists.txt").exists():
        sys.exit(f"wheel_smoke: deltajax was imported from a source tree ({where}), not from an installed wheel")
    print(f"deltajax from {where}\n{_native.describe()}")
    if platform not in _native.native_platforms():
        sys.exit(f"wheel_smoke: no native kernels for {platform}: {_native.describe()}")


def check_sparse_conv(device) -> None:
    """One sparse conv through the native custom call equals the pure-JAX reference on the active pixels."""
    rng = np.random.default_rng(0)
    x = ops.Delta(
        jax.device_put(jnp.asarray(rng.normal(size=(1, 6, 7, 8)), jnp.float32), device),
        jax.device_put(jnp.asarray(rng.random((1, 6, 7)) < 0.3), device),
    )
    kernel = jax.device_put(jnp.ones((3, 3, 8, 16)) / 9, device)
    conv = jax.jit(lambda x: ops.conv(x, kernel))
    if "deltajax_conv" not in conv.lower(x).as_text():
        sys.exit("wheel_smoke: the compiled conv has no deltajax_conv custom call")
    got = conv(x)
    with backend.use_reference():
        want = jax.jit(lambda x: ops.conv(x, kernel))(x)
    mask = np.asarray(want.mask)[..., None]
    error = np.abs(np.where(mask, got.values, 0) - np.where(mask, want.values, 0)).max()
    print(f"sparse conv: max error against the reference {error:.2e}")
    if error > 1e-5:
        sys.exit("wheel_smoke: the native conv differs from the reference")


def check_exact_clip(device) -> None:
    """run_clip at threshold 0 equals the dense net frame by frame on a clip with a moving patch, in float32 with
    HIGHEST matmul precision (in TF32 dense and delta round differently: ~2e-4 apart on an H200)."""
    clip = jax.random.uniform(jax.random.key(0), (FRAMES, 1, 48, 64, 3)).at[1:, :, :8].set(0.5)
    clip = clip.at[jnp.arange(1, FRAMES), :, 20:28, jnp.arange(1, FRAMES) * 4].set(1.0)
    clip = jax.device_put(clip, device)
    variables = Net().init(jax.random.key(1), clip[0])
    stepper = deltajax.delta(Net().apply, config=deltajax.DeltaConfig(threshold=0.0))
    delta = np.asarray(deltajax.run_clip(stepper, clip, variables))
    dense = np.asarray(jax.jit(jax.vmap(lambda x: Net().apply(variables, x)))(clip))
    error = np.abs(delta - dense).max()
    print(f"run_clip over {FRAMES} frames at threshold 0: max error against dense {error:.2e}")
    if error > 1e-4 * max(1.0, np.abs(dense).max()):
        sys.exit("wheel_smoke: the delta clip differs from the dense net")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platform", choices=["cpu", "cuda"], default="cpu")
    platform = parser.parse_args().platform
    check_installed_wheel(platform)
    device = jax.devices(platform)[0]
    with jax.default_device(device), jax.default_matmul_precision("highest"):
        check_sparse_conv(device)
        check_exact_clip(device)
    print("wheel ok")


if __name__ == "__main__":
    main()
