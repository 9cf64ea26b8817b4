"""Timing helpers (the crossover measurement, the benchmarks): in-graph repetition, medians, blob masks."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_SMALL = 1 << 20  # elements: arguments up to this size (weights) are perturbed per repetition


def first_scalar(tree) -> jax.Array:
    """The first element of ``tree``'s first leaf as a float32 scalar: a token that chains a computation to it."""
    leaf = jax.tree_util.tree_leaves(tree)[0]
    return leaf.reshape(-1)[0].astype(jnp.float32)


def repeated(fn: Callable, reps: int) -> Callable:
    """A jitted function running ``fn(*args)`` ``reps`` times back to back in one program.

    XLA merges identical calls, even across optimization barriers, so each
    repetition gets its own operands: every small floating argument (weights)
    has ``0 * token`` added, ``token`` being a scalar of the previous output.
    That chains the repetitions, costs a few elements of work, and leaves the
    large arguments (frames) untouched.
    """

    def perturbed(x, token):
        if jnp.issubdtype(x.dtype, jnp.floating) and x.size <= _SMALL:
            return x + (token * 0).astype(x.dtype)
        return x

    def run(*args):
        token = jnp.zeros((), jnp.float32)
        for _ in range(reps):
            barred, token = lax.optimization_barrier((args, token))
            token = first_scalar(fn(*jax.tree_util.tree_map(lambda x, t=token: perturbed(x, t), barred)))
        return token

    return jax.jit(run)


def median_time(fn: Callable, *args, target_s: float = 0.25, max_reps: int = 64, runs: int = 7) -> float:
    """Median seconds of one ``fn(*args)`` inside a compiled program (see :func:`repeated`)."""
    once = repeated(fn, 1)
    jax.block_until_ready(once(*args))
    t0 = time.perf_counter()
    jax.block_until_ready(once(*args))
    single = max(time.perf_counter() - t0, 1e-6)
    reps = int(np.clip(target_s / single, 1, max_reps))
    many = repeated(fn, reps)
    jax.block_until_ready(many(*args))
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        jax.block_until_ready(many(*args))
        samples.append((time.perf_counter() - t0) / reps)
    return float(np.median(samples))


def stepped_time(step: Callable, state, *args, reps: int = 16, runs: int = 5, unroll: bool = False) -> float:
    """Median seconds of one ``step(state, *args) -> (out, state)`` with the state carried and donated.

    For ops that update their state in place (aliased custom-call results):
    :func:`repeated` would hand every repetition the same, undonated state, and
    XLA would copy it before each in-place update. ``unroll``: see
    :func:`stepped_program`.
    """

    many = stepped_program(step, reps, unroll)
    state, _ = many(state, *args)
    jax.block_until_ready(state)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        state, tokens = many(state, *args)
        jax.block_until_ready(tokens)
        samples.append((time.perf_counter() - t0) / reps)
    return float(np.median(samples))


def stepped_program(step: Callable, reps: int, unroll: bool = False) -> Callable:
    """``reps`` steps in one jitted scan, the state donated; one compile per ``step`` for all calls (cached: the
    program that ``stepped_time`` timed, for a caller that traces or lowers it, however it passes ``unroll``).

    ``unroll``: the steps as straight-line code instead of a loop, for a single layer's step. On a GPU, XLA runs a
    loop's body kernel by kernel, outside its command buffers (a traced conv + relu6 step with nothing active on an
    H100, 2026-12-07: 15.3 us of kernels, 5.8-7.3 us apart, 68.7 us a step), where a model's layers run inside one
    (about 0.1 us apart). Unrolled, the layer's time is its kernels' and their launches'. Not for a whole model's
    step: ``reps`` copies of it to compile."""
    return _stepped_program(step, reps, bool(unroll))


@functools.lru_cache(maxsize=16)
def _stepped_program(step: Callable, reps: int, unroll: bool) -> Callable:
    def run(state, *args):
        def body(st, _):
            out, st = step(st, *args)
            return st, first_scalar(out)

        return lax.scan(body, state, None, length=reps, unroll=reps if unroll else 1)

    return jax.jit(run, donate_argnums=0)


def blob_mask(n: int, h: int, w: int, fraction: float, seed: int = 0) -> np.ndarray:
    """``[N, H, W]`` bool: round blobs at random places until ``fraction`` of the pixels are covered."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((n, h, w), bool)
    if fraction <= 0:
        return mask
    if fraction >= 1:
        return np.ones((n, h, w), bool)
    yy, xx = np.mgrid[0:h, 0:w]
    radius = max(3.0, 0.04 * min(h, w))
    for b in range(n):
        while mask[b].mean() < fraction:
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            r = radius * rng.uniform(0.5, 1.5)
            mask[b] |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return mask


def scatter_mask(n: int, h: int, w: int, fraction: float, seed: int = 0) -> np.ndarray:
    """``[N, H, W]`` bool: every pixel active on its own with probability ``fraction`` (sensor noise past a
    threshold, say): every 8x16 tile of a frame holds an active pixel from a fraction of a few percent on."""
    if fraction >= 1:
        return np.ones((n, h, w), bool)
    return np.random.default_rng(seed).random((n, h, w)) < fraction


MASKS = {"blob": blob_mask, "scatter": scatter_mask}  # the benchmarks' mask shapes, by name
