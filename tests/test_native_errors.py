"""Bad inputs: clean errors from the C++ validation (FFI called directly) and from the Python layer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deltajax import _native, ops

native_cpu = pytest.mark.skipif(
    _native.default_platform() not in _native.native_platforms(), reason="no native kernels for this backend"
)
S = (1, 4, 5, 3)
F32, BOOL = jnp.float32, jnp.bool_


def sds(shape, dtype):
    return jax.ShapeDtypeStruct(shape, dtype)


def ffi(target, results, *args, **attrs):
    return jax.jit(lambda *a: jax.ffi.ffi_call(target, results)(*a, **attrs))(*args)


def z(shape=S, dtype=F32):
    return jnp.zeros(shape, dtype)


ACT_ATTRS = dict(act=np.int32(1), negative_slope=np.float32(0.1), truncation=np.int32(0), threshold=np.float32(0))
ACT_RESULTS = (sds(S, F32), sds(S[:3], BOOL), sds(S, F32), sds(S, F32))


def activation_call(scale=(3,), acc=None, sent=None, **attrs):
    """deltajax_activation on x = zeros S, all masks off, with one argument or attribute made bad."""
    acc, sent = (z() if a is None else a for a in (acc, sent))
    return ffi("deltajax_activation", ACT_RESULTS, z(), z(S[:3], BOOL), z(scale), acc, sent, **{**ACT_ATTRS, **attrs})


CONV_ATTRS = {
    **{k: np.int32(0) for k in ("pad_top", "pad_left")},
    **{k: np.int32(1) for k in ("stride_h", "stride_w", "lhs_dil_h", "lhs_dil_w", "rhs_dil_h", "rhs_dil_w")},
    **dict(groups=np.int32(1), precision=np.int32(1)),
}
PRELU = 11  # ActKind::kPRelu


def conv_prelu_call(slopes=z((3,)), act=PRELU):
    """deltajax_conv_prelu of a 1x1 conv 3 -> 3 on x = zeros S, all masks off, with the slopes or the kind made bad;
    the workspace the default platform's target expects (CUDA's holds the rule's row tiles too), so that the bad
    argument is the one reported."""
    workspace = ops.fused.workspace_size(_native.default_platform(), S, F32)
    results = (*ACT_RESULTS[:2], sds(S, F32), sds(S, F32), sds(S[:3], BOOL), sds((workspace,), jnp.int32))
    args = (z(), z(S[:3], BOOL), z((1, 1, 3, 3)), z((3,)), slopes, z(), z())
    return ffi("deltajax_conv_prelu", results, *args, **CONV_ATTRS, **{**ACT_ATTRS, "act": np.int32(act)})


POOL_ATTRS = dict(kh=np.int32(2), kw=np.int32(2), stride_h=np.int32(2), stride_w=np.int32(2))
POOL_RESULTS = (sds((1, 2, 2, 3), F32), sds((1, 2, 2), BOOL), sds(S, F32))

CASES = {
    "state dtype": (
        lambda: activation_call(acc=z(S, jnp.float16)),
        r"deltajax_activation: argument 'acc' must be float32",
    ),
    "state shape": (
        lambda: activation_call(sent=z((1, 4, 5, 2))),
        r"deltajax_activation: argument 'sent' must have shape \(1, 4, 5, 3\), got \(1, 4, 5, 2\)",
    ),
    "activation kind": (
        lambda: activation_call(act=np.int32(99)),
        r"deltajax_activation: attribute 'act' must be an ActKind in \[0, 12\), got 99",
    ),
    "truncation mode": (
        lambda: activation_call(truncation=np.int32(7)),
        r"deltajax_activation: attribute 'truncation' must be 0 \(max\)",
    ),
    "activation scale shape": (
        lambda: activation_call(scale=(4,)),
        r"deltajax_activation: argument 'scale' must have shape \(3,\), got \(4,\)",
    ),
    "values dtype": (
        lambda: ffi("deltajax_densify", sds(S, F32), z(S, jnp.int32), z(S[:3], BOOL), z()),
        r"deltajax_densify: argument 'x' must be float32, bfloat16 or float16",
    ),
    "mask dtype": (
        lambda: ffi("deltajax_densify", sds(S, F32), z(), z(S[:3], jnp.int8), z()),
        r"deltajax_densify: argument 'mask' must be bool",
    ),
    "mask shape": (
        lambda: ffi("deltajax_affine", sds(S, F32), z(), z((1, 4, 4), BOOL), z((3,))),
        r"deltajax_affine: argument 'mask' must have shape \(1, 4, 5\), got \(1, 4, 4\)",
    ),
    "operand dtype": (
        lambda: ffi(
            "deltajax_add", (sds(S, F32), sds(S[:3], BOOL)), z(), z(S[:3], BOOL), z(S, jnp.float16), z(S[:3], BOOL)
        ),
        r"deltajax_add: argument 'y' must have the element type of 'x'",
    ),
    "binary op": (
        lambda: ffi(
            "deltajax_binary",
            (sds(S, F32), sds(S[:3], BOOL), sds(S, F32), sds(S, F32)),
            *[z(), z(S[:3], BOOL), z(), z(S[:3], BOOL), z(), z()],
            op=np.int32(5),
        ),
        r"deltajax_binary: attribute 'op' must be 0 \(multiply\) or 1 \(maximum\), got 5",
    ),
    "pool window": (
        lambda: ffi(
            "deltajax_max_pool",
            POOL_RESULTS,
            z(),
            z(S[:3], BOOL),
            z(),
            **{**POOL_ATTRS, "kh": np.int32(0)},
            pad_top=np.int32(0),
            pad_left=np.int32(0),
        ),
        r"deltajax_max_pool: window and strides must be >= 1",
    ),
    "pool pads": (
        lambda: ffi(
            "deltajax_max_pool",
            POOL_RESULTS,
            z(),
            z(S[:3], BOOL),
            z(),
            **POOL_ATTRS,
            pad_top=np.int32(2),
            pad_left=np.int32(0),
        ),
        r"deltajax_max_pool: pads must be in \[0, window\)",
    ),
    "resample tables": (
        lambda: ffi(
            "deltajax_resample",
            (sds((1, 8, 10, 3), F32), sds((1, 8, 10), BOOL)),
            *[z(), z(S[:3], BOOL), z((7, 2), jnp.int32), z((8, 2)), z((10, 2), jnp.int32), z((10, 2))],
        ),
        r"deltajax_resample: argument 'taps_h' must have shape \(8, 2\), got \(7, 2\)",
    ),
    "global pool state": (
        lambda: ffi("deltajax_global_avg_pool", sds((1, 4), F32), z(), z(S[:3], BOOL), z((1, 4))),
        r"deltajax_global_avg_pool: argument 'acc' must have shape \(1, 3\), got \(1, 4\)",
    ),
    "conv prelu slopes shape": (
        lambda: conv_prelu_call(slopes=z((4,))),
        r"deltajax_conv_prelu: argument 'slopes' must have shape \(3,\), got \(4,\)",
    ),
    "conv prelu slopes dtype": (
        lambda: conv_prelu_call(slopes=z((3,), jnp.bfloat16)),
        r"deltajax_conv_prelu: argument 'slopes' must be float32",
    ),
    "conv prelu kind": (
        lambda: conv_prelu_call(act=1),
        r"deltajax_conv_prelu: attribute 'act' must be prelu \(11\) exactly when per-channel slopes are given",
    ),
    "conv groups": (
        lambda: ffi(
            "deltajax_conv",
            (sds((1, 4, 5, 4), F32), sds((1, 4, 5), BOOL), sds((21,), jnp.int32)),
            *[z(), z(S[:3], BOOL), z((3, 3, 2, 4))],
            **{
                k: np.int32(1)
                for k in ("stride_h", "stride_w", "pad_top", "pad_left", "lhs_dil_h", "lhs_dil_w", "rhs_dil_h")
            },
            rhs_dil_w=np.int32(1),
            groups=np.int32(1),
            precision=np.int32(1),
        ),
        r"deltajax_conv: argument 'kernel' \(3, 3, 2, 4\) does not fit 3 input channels in 1 groups",
    ),
}


@native_cpu
@pytest.mark.parametrize("case", sorted(CASES))
def test_cpp_validation_gives_a_clean_error_and_jax_stays_usable(case):
    call, message = CASES[case]
    # Every message names its target; every target is in each native module (targets.def).
    assert message.partition(":")[0] in _native.targets(_native.default_platform())
    with pytest.raises(Exception, match=message):
        jax.block_until_ready(call())
    assert float(jax.jit(lambda a: a.sum())(jnp.ones(3))) == 3.0


def delta(shape=S, dtype=F32):
    return ops.Delta(jnp.zeros(shape, dtype), jnp.zeros(shape[:3], bool))


def test_python_errors_of_the_native_ops():
    with pytest.raises(TypeError, match=r"add: arguments 'x' and 'y' must have the same dtype, got float32 and"):
        ops.add(delta(), delta(dtype=jnp.bfloat16))
    _, state = ops.add_activation_init(z(), z())
    with pytest.raises(ValueError, match=r"add_activation: arguments 'x' and 'y' must have the same shape and dtype"):
        ops.add_activation(state, delta(), delta((1, 4, 5, 2)))
    with pytest.raises(ValueError, match=r"add_activation: argument 'state.acc' belongs to a stream of shape"):
        ops.add_activation(state, delta((1, 4, 6, 3)), delta((1, 4, 6, 3)))
    _, pool_state = ops.max_pool_init(z(), 2)
    with pytest.raises(ValueError, match=r"max_pool: argument 'state.acc' belongs to a stream"):
        ops.max_pool(pool_state, delta((1, 4, 6, 3)), 2)
    with pytest.raises(ValueError, match=r"max_pool: argument 'window' must be a positive int"):
        ops.max_pool(pool_state, delta(), 0)
    _, gp = ops.global_avg_pool_init(z())
    with pytest.raises(ValueError, match=r"global_avg_pool: argument 'state.acc' belongs to a stream"):
        ops.global_avg_pool(gp, delta((1, 4, 5, 2)))
    with pytest.raises(ValueError, match=r"upsample: argument 'factor' must be a positive int"):
        ops.upsample(delta(), 0)
    with pytest.raises(ValueError, match=r"affine: argument 'mul' must have shape \(3,\)"):
        ops.affine(delta(), jnp.ones(4))
    with pytest.raises(ValueError, match=r"Activation: unknown name 'relu7'"):
        ops.activation(ops.activation_init(z())[1], delta(), "relu7")
    with pytest.raises(ValueError, match=r"Truncation: mode must be one of"):
        ops.Truncation("mean")
    _, bs = ops.multiply_init(z(), z((1, 1, 1, 3)))
    with pytest.raises(ValueError, match=r"binary: argument 'state.acc_y' belongs to a stream"):
        ops.multiply(bs, delta(), delta())
