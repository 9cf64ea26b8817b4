"""The rule of each primitive on delta frames (delta-semantics.md section 4), calling deltajax.ops.

``apply(run, eqn)`` picks the rule from the primitive and the kinds of its
operands. Frame-independent equations run densely (constants); equations whose
frame-dependent operands are all dense run densely; anything without a rule
falls back: densify the inputs, run densely, re-sparsify the output exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from deltajax import ops
from deltajax.transform import _refresh
from deltajax.transform._analysis import ELEMENTWISE, linear_roles
from deltajax.transform._jaxpr import Const, Eqn, Var
from deltajax.transform._values import Sparse, to_delta, to_sparse

_NHWC = (0, 3, 1, 2)


def is_float(dtype) -> bool:
    dtype = np.dtype(dtype)
    return dtype.kind == "f" or dtype.name == "bfloat16"


def bind(eqn: Eqn, values):
    """``eqn``'s primitive applied to ``values``: its outputs, as a list."""
    out = eqn.primitive.bind(*values, **eqn.params)
    return list(out) if eqn.primitive.multiple_results else [out]


def _frame_flags(run, eqn: Eqn) -> tuple[bool, ...]:
    return tuple(run.kind_of(v) != "const" for v in eqn.inputs)


def apply(run, eqn: Eqn) -> None:
    """Runs one equation in ``run`` (a ``_interpret.Run``), setting its outputs."""
    frame = _frame_flags(run, eqn)
    if not any(frame):
        for var, value in zip(eqn.outputs, bind(eqn, [run.read(v) for v in eqn.inputs]), strict=True):
            run.set(var, value, "const")
        return
    if all(run.kind_of(v) != "delta" for v in eqn.inputs) or run.in_dense_tail(eqn):
        _dense(run, eqn)  # (a group's members after its root went dense included)
        return
    root = run.analysis.group_root.get(eqn)
    if root is not None and run.kind_of(root) == "delta":
        _group_member(run, eqn, root)
        return
    rule = _RULES.get(eqn.name, _linear_or_fallback)
    if eqn.name in ELEMENTWISE:
        rule = _multi_root
    rule(run, eqn, frame)


# -- dense paths ------------------------------------------------------------------------------------------------
def _macs(eqn: Eqn) -> float:
    """Dense multiply-adds of a convolution or matmul (0 for other primitives)."""
    out = eqn.outputs[0]
    if eqn.name == "conv_general_dilated":
        rhs = eqn.inputs[1].shape if isinstance(eqn.inputs[1], Var) else np.shape(eqn.inputs[1].value)
        spec = eqn.params["dimension_numbers"].rhs_spec
        per_out = math.prod(rhs[d] for d in spec[1:])
        return float(np.prod(out.shape, dtype=np.float64)) * per_out
    if eqn.name == "dot_general":
        lhs = eqn.inputs[0].shape if isinstance(eqn.inputs[0], Var) else np.shape(eqn.inputs[0].value)
        (contract, _), _ = eqn.params["dimension_numbers"]
        return float(np.prod(out.shape, dtype=np.float64)) * math.prod(lhs[d] for d in contract)
    return 0.0


def _dense(run, eqn: Eqn) -> None:
    """``eqn`` as the plain model runs it, its delta operands densified (``DeltaConfig.dense_from_stride``)."""
    outs = bind(eqn, [run.need_dense(v) for v in eqn.inputs])
    for var, value in zip(eqn.outputs, outs, strict=True):
        run.set(var, value, "dense")
    if eqn.name in ("conv_general_dilated", "dot_general"):
        run.record(run.node(eqn.scope, eqn.name.split("_")[0], "dense"), None, _macs(eqn))


def _fallback(run, eqn: Eqn, frame=None) -> None:
    """No delta rule: densify the inputs, run densely, re-sparsify rank-4 outputs (threshold 0: exact)."""
    name = run.node(eqn.scope, eqn.name, f"fallback:{eqn.name}")
    outs = bind(eqn, [run.need_dense(v) for v in eqn.inputs])
    run.record(name, None, _macs(eqn), fallback=True)
    states_in = None if run.init else run.state(name)
    states = []
    for i, (var, value) in enumerate(zip(eqn.outputs, outs, strict=True)):
        if len(var.shape) == 4 and is_float(var.dtype):
            if run.init:
                value, s = ops.sparsify_init(value)
            else:
                value, s = ops.sparsify(states_in[i], value)
            states.append(s)
            run.set(var, value, "delta")
            run.hold(var, name, _refresh.held(lambda st, i=i: st[i].ref))
        else:
            states.append(None)
            run.set(var, value, "dense")
    run.states[name] = tuple(states)


# -- linear rules -------------------------------------------------------------------------------------------------
def _linear_values(eqn: Eqn, roles, operands) -> Sparse:
    """``eqn`` applied to the deltas (additive constants dropped) and to their activity maps."""
    vals, acts = [], []
    for role, x in zip(roles, operands, strict=True):
        if role == "frame":
            s = to_sparse(x)
            vals.append(s.masked())
            acts.append(s.activity().astype(s.values.dtype))
        elif role == "zero":
            vals.append(jnp.zeros_like(x))
            acts.append(jnp.zeros_like(x))
        elif role == "nonzero":
            vals.append(x)
            acts.append((jnp.asarray(x) != 0).astype(jnp.asarray(x).dtype))
        elif role == "one":
            vals.append(x)
            acts.append(jnp.ones_like(x))
        else:
            vals.append(x)
            acts.append(x)
    (values,) = bind(eqn, vals)
    if eqn.name == "neg":
        return Sparse(values, acts[0] > 0)
    act_eqn = Eqn(lax.add_p, eqn.inputs, eqn.outputs, {}, eqn.scope) if eqn.name == "sub" else eqn
    (activity,) = bind(act_eqn, acts)
    return Sparse(values, activity > 0)


def _shape_keeping_delta(eqn: Eqn, roles, operands) -> int | None:
    """The index of ``eqn``'s one frame operand when it is a Delta of the output's shape and dtype, else None."""
    frame_pos = [i for i, r in enumerate(roles) if r == "frame"]
    if len(frame_pos) != 1 or len(operands) != 2:
        return None
    i = frame_pos[0]
    x, out = operands[i], eqn.outputs[0]
    if not isinstance(x, ops.Delta) or tuple(out.shape) != x.shape or np.dtype(out.dtype) != np.dtype(x.dtype):
        return None
    return i


def _channel_factor(eqn: Eqn, roles, operands):
    """``(frame operand index, [C] float32 factor)`` when ``eqn`` multiplies (or divides) a Delta by a constant
    per channel (a batch-norm scale) and keeps its shape and dtype, else None."""
    i = _shape_keeping_delta(eqn, roles, operands)
    if i is None or not (eqn.name == "mul" or (eqn.name == "div" and i == 0)):
        return None
    factor = jnp.asarray(operands[1 - i])
    channels = eqn.outputs[0].shape[-1]
    if factor.ndim and (factor.shape[-1] not in (1, channels) or any(d != 1 for d in factor.shape[:-1])):
        return None
    vector = jnp.broadcast_to(
        jnp.reshape(factor, (-1,))[-1:] if factor.size == 1 else factor.reshape(-1), (channels,)
    ).astype(jnp.float32)
    return i, (1.0 / vector if eqn.name == "div" else vector)


def _passes_through(eqn: Eqn, roles, operands) -> int | None:
    """The index of the Delta operand that ``eqn`` passes through unchanged (an additive constant: conv bias,
    batch-norm offset, mean subtraction), else None."""
    i = _shape_keeping_delta(eqn, roles, operands)
    return i if i is not None and (eqn.name in ("add", "add_any") or (eqn.name == "sub" and i == 0)) else None


def _fast_linear(eqn: Eqn, roles, operands):
    """The linear rule without full-frame passes where it is per pixel, else None.

    On a Delta whose shape the output keeps: an additive constant drops out,
    so the delta passes through; a per-channel factor is ``ops.affine``, which
    touches only active pixels on the native kernels.
    """
    through = _passes_through(eqn, roles, operands)
    if through is not None:
        return operands[through]
    factor = _channel_factor(eqn, roles, operands)
    if factor is not None:
        i, vector = factor
        return ops.affine(operands[i], vector)
    return None


def _track_scaled(run, eqn: Eqn, roles, operands) -> None:
    """Records in ``run.scaled`` that ``eqn``'s delta is an earlier Delta times a per-channel factor."""
    frame_vars = [v for v, r in zip(eqn.inputs, roles, strict=True) if r == "frame"]
    if len(frame_vars) != 1:
        return
    before = run.scaled.get(frame_vars[0])
    out = eqn.outputs[0]
    if _passes_through(eqn, roles, operands) is not None:
        if before is not None:
            run.scaled[out] = before
        return
    factor = _channel_factor(eqn, roles, operands)
    if factor is not None:
        i, vector = factor
        run.scaled[out] = (operands[i], vector) if before is None else (before[0], before[1] * vector)


# -- error feedback of 16-bit deltas that no activation emits ----------------------------------------------------
_IDENTITY = ops.Activation("identity")
_EXACT = ops.Truncation("max", 0.0)  # drops a pixel only when its whole update is zero


def _fed_back(run, var: Var) -> bool:
    """Whether a delta of ``var`` that no activation emits goes out through a feedback node: for 16-bit images,
    unless ``DeltaConfig.feedback`` is off.

    Rounding a linear layer's output delta to bfloat16 every frame, with nothing to take the rounding back, is a
    random walk in every consumer's accumulated state. A feedback node is the identity activation rule: it
    accumulates the layer's float32 result (the convolution's, or the exact sum of an add) and emits the rounded
    difference to what it has sent, so consumers hold that value rounded once. Float32 streams need none.
    """
    sixteen_bit = jnp.dtype(var.dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    return run.config.feedback and len(var.shape) == 4 and sixteen_bit


def _group_fed_back(run, root: Var) -> bool:
    """Whether the group of ``root``, a native conv's output that only the group reads, ends without an activation
    in a feedback node (``_group_feedback``), which takes the conv and its batch-norm scale fused."""
    out = run.analysis.private_roots.get(root)
    return out in run.analysis.affine and root in run.native_convs and _fed_back(run, out)


def _linear(run, eqn: Eqn, roles) -> None:
    """The linear rule on any primitive linear in its frame-dependent operands."""
    (out,) = eqn.outputs
    operands = [run.need_delta(v) if r == "frame" else run.read(v) for v, r in zip(eqn.inputs, roles, strict=True)]
    if run.init:
        (value,) = bind(eqn, operands)
    else:
        value = _fast_linear(eqn, roles, operands)
        value = _linear_values(eqn, roles, operands) if value is None else value
    if eqn.name in ("conv_general_dilated", "dot_general"):
        run.record(run.node(eqn.scope, eqn.name.split("_")[0], f"linear:{eqn.name}"), value, _macs(eqn))
    run.set(out, value, "delta")


def _linear_or_fallback(run, eqn: Eqn, frame) -> None:
    roles = linear_roles(eqn, frame)
    if roles is not None and all(run.can_delta(v) for v, r in zip(eqn.inputs, roles, strict=True) if r == "frame"):
        _linear(run, eqn, roles)
    else:
        _fallback(run, eqn)


def _conv(run, eqn: Eqn, frame) -> None:
    lhs, rhs = eqn.inputs
    p = eqn.params
    dims = p["dimension_numbers"]
    strides, lhs_dil = tuple(p["window_strides"]), tuple(p["lhs_dilation"])
    pads = tuple(tuple(q) for q in p["padding"])
    native = (
        frame == (True, False)
        and run.kind_of(lhs) == "delta"
        and len(lhs.shape) == 4
        and tuple(dims.lhs_spec) == _NHWC
        and tuple(dims.out_spec) == _NHWC
        and p["batch_group_count"] == 1
        and min(min(q) for q in pads) >= 0
        and (strides == (1, 1) or lhs_dil == (1, 1))
        and eqn.outputs[0].dtype == lhs.dtype
    )
    if not native:
        _linear_or_fallback(run, eqn, frame)
        return
    out = eqn.outputs[0]
    kernel = run.read(rhs)
    kernel_hwio = _refresh.kernel_hwio(kernel, dims)
    kh, kw, cin_g, cout = kernel_hwio.shape
    per_active = kh * kw * cin_g * cout
    name = run.node(eqn.scope, "conv")
    if lhs_dil == (1, 1):
        run.native_convs.add(out)
    # A group that reads this conv alone feeds it back itself (its activation, or _group_feedback); else here.
    feedback = (
        run.node(eqn.scope, "feedback")
        if _fed_back(run, out) and lhs_dil == (1, 1) and (out not in run.analysis.private_roots)
        else None
    )
    if run.init:
        (value,) = bind(eqn, [run.read(lhs), kernel])
        if feedback:
            value, run.states[feedback] = ops.activation_init(value, _IDENTITY)
        made = value
    else:
        d = to_delta(run.read(lhs))
        kwargs = dict(padding=pads, dilation=tuple(p["rhs_dilation"]), precision=p["precision"])
        if lhs_dil != (1, 1):
            value = made = ops.conv_transpose(
                d, kernel_hwio, strides=lhs_dil, groups=p["feature_group_count"], **kwargs
            )
        else:
            kwargs.update(strides=strides, groups=p["feature_group_count"])
            if feedback:
                value, run.states[feedback], conv_mask = ops.conv_activation(
                    run.state(feedback), d, kernel_hwio, _IDENTITY, _EXACT, **kwargs
                )
                made = ops.Delta(value.values, conv_mask)  # the conv's own output mask, for its stats
            else:
                value = made = ops.conv(d, kernel_hwio, **kwargs)
                run.convs[out] = ConvCall(value, d, kernel_hwio, kwargs, name, _macs(eqn), per_active)
    run.record(name, made, _macs(eqn), per_active=per_active)
    if feedback:
        run.record(feedback, value)
        _holds_sent(run, out, feedback, eqn)
    run.set(out, value, "delta")


def _holds_sent(run, out: Var, name: str, eqn: Eqn) -> None:
    """``out`` is emitted by the feedback node ``name`` of ``eqn``'s result: the rolling refresh recomputes the node's
    accumulated input as that result and reads what the node has sent."""
    run.hold(out, name, _refresh.held("sent"))
    run.refreshes(name, "acc", eqn)


@dataclasses.dataclass(frozen=True)
class ConvCall:
    """A native delta conv of a step: its result, arguments, node name and multiply-adds (for its stats)."""

    value: ops.Delta
    x: ops.Delta
    kernel: jax.Array
    kwargs: dict
    name: str
    dense_macs: float
    per_active: float


def _private_conv(run, root: Var, delta) -> ConvCall | None:
    """The native conv of this step whose result is ``delta``, the value of ``root``, when nothing but
    ``root``'s group reads that result (so the conv may be redone differently); else None."""
    conv = run.convs.get(root)
    if conv is None or conv.value is not delta or root not in run.analysis.private_roots:
        return None
    return conv


def _scale_folded_into_conv(run, eqn: Eqn, roles, operands, root: Var):
    """A per-channel factor (a batch-norm scale) on the delta of a native conv that nothing else reads, in a group
    that ends without an activation (a projection conv -> batch norm), as that conv with the factor folded into
    its kernel's output channels: one conv instead of a conv and an affine pass. Else None. (Where an activation
    or a feedback node follows, it takes the conv and the factor fused instead: ``_activation_step``.)"""
    factor = _channel_factor(eqn, roles, operands)
    if factor is None or run.analysis.private_roots.get(root) not in run.analysis.affine or _group_fed_back(run, root):
        return None
    i, vector = factor
    conv = _private_conv(run, root, operands[i])
    if conv is None:
        return None
    kernel = (conv.kernel.astype(jnp.float32) * vector.reshape(1, 1, 1, -1)).astype(conv.kernel.dtype)
    value = ops.conv(conv.x, kernel, **conv.kwargs)
    run.record(conv.name, value, conv.dense_macs, per_active=conv.per_active)
    return value


def _activation_step(run, name: str, root: Var, start: Var, act: ops.Activation, slopes, trunc: ops.Truncation):
    """The activation rule on a step (``slopes``: prelu's ``[C]``, else None), fused with the conv that made
    ``start``'s delta where nothing else reads that conv's output (its own call is then dead, and XLA drops it)."""
    x, scale = run.scaled.get(start, (to_delta(run.read(start)), None))  # batch-norm scale fused if any
    conv = _private_conv(run, root, x)
    if conv is None:
        return ops.activation(run.state(name), x, act, trunc, scale=scale, slopes=slopes)
    value, state, conv_mask = ops.conv_activation(
        run.state(name), conv.x, conv.kernel, act, trunc, scale, slopes=slopes, **conv.kwargs
    )
    run.record(conv.name, ops.Delta(value.values, conv_mask), conv.dense_macs, per_active=conv.per_active)
    return value, state


def _dot_general(run, eqn: Eqn, frame) -> None:
    lhs, rhs = eqn.inputs
    (contract, batch) = eqn.params["dimension_numbers"]
    native = (
        frame == (True, False)
        and run.kind_of(lhs) == "delta"
        and len(lhs.shape) == 4
        and len(rhs.shape if isinstance(rhs, Var) else np.shape(rhs.value)) == 2
        and tuple(contract[0]) == (3,)
        and tuple(contract[1]) in ((0,), (1,))
        and not batch[0]
        and eqn.outputs[0].dtype == lhs.dtype
    )
    if not native:
        _linear_or_fallback(run, eqn, frame)
        return
    kernel = run.read(rhs)
    kernel = kernel if tuple(contract[1]) == (0,) else kernel.T
    name = run.node(eqn.scope, "dense")
    if run.init:
        (value,) = bind(eqn, [run.read(lhs), run.read(rhs)])
    else:
        value = ops.dense(to_delta(run.read(lhs)), kernel, precision=eqn.params["precision"])
    run.record(name, value, _macs(eqn), per_active=kernel.shape[0] * kernel.shape[1])
    run.set(eqn.outputs[0], value, "delta")


def _max_pool(run, eqn: Eqn, frame) -> None:
    (x,) = eqn.inputs
    p = eqn.params
    win, strides, pads = p["window_dimensions"], p["window_strides"], p["padding"]
    ok = (
        run.kind_of(x) == "delta"
        and len(x.shape) == 4
        and is_float(x.dtype)
        and win[0] == win[3] == strides[0] == strides[3] == 1
        and tuple(pads[0]) == tuple(pads[3]) == (0, 0)
        and set(p["base_dilation"]) == set(p["window_dilation"]) == {1}
    )
    if not ok:
        _fallback(run, eqn)
        return
    args = ((win[1], win[2]), (strides[1], strides[2]), (tuple(pads[1]), tuple(pads[2])))
    name = run.node(eqn.scope, "max_pool")
    if run.init:
        value, run.states[name] = ops.max_pool_init(run.read(x), *args)
    else:
        value, run.states[name] = ops.max_pool(run.state(name), to_delta(run.read(x)), *args)
    run.record(name, value)
    run.set(eqn.outputs[0], value, "delta")
    run.refreshes(name, "acc", x)

    def held(st, bands, start, h):  # the window over the accumulated input
        return bands.eqn(eqn, start, h, lambda _var, s, n, _axis: _refresh.rows(st.acc, bands.value(s), n))

    run.hold(eqn.outputs[0], name, held)


def _reduce_sum(run, eqn: Eqn, frame) -> None:
    (x,) = eqn.inputs
    if not (tuple(eqn.params["axes"]) == (1, 2) and len(x.shape) == 4 and is_float(x.dtype)):
        _linear_or_fallback(run, eqn, frame)
        return
    name = run.node(eqn.scope, "global_pool")
    if run.init:
        mean, run.states[name] = ops.global_avg_pool_init(run.read(x))
    else:
        mean, run.states[name] = ops.global_avg_pool(run.state(name), to_delta(run.read(x)))
    run.record(name, None)
    run.set(eqn.outputs[0], (mean * (x.shape[1] * x.shape[2])).astype(eqn.outputs[0].dtype), "dense")
    run.refreshes(name, "acc", x, "mean")


# -- element-wise rules ----------------------------------------------------------------------------------------
def _read_back(run, eqn: Eqn, stop) -> tuple[list, set]:
    """Walks back from ``eqn`` through the producers of the Vars it reads, not past Vars for which ``stop(v)``:
    the equations visited (``eqn`` first) and the non-constant Vars read on the way."""
    eqns, read, todo = [], set(), [eqn]
    while todo:
        e = todo.pop()
        if e in eqns:
            continue
        eqns.append(e)
        for v in e.inputs:
            if isinstance(v, Var) and run.kind_of(v) != "const":
                read.add(v)
                if not stop(v):
                    todo.append(run.analysis.producer[v])
    return eqns, read


def _group_fn(run, eqn: Eqn, root: Var):
    """The function root -> ``eqn``'s output through the group's equations (constants bound now), and its scope."""
    needed, _ = _read_back(run, eqn, lambda v: v is root)
    order = {e: i for i, e in enumerate(run.program.eqns)}
    needed.sort(key=order.__getitem__)
    consts = {v: run.read(v) for e in needed for v in e.inputs if run.kind_of(v) == "const"}

    def fn(x):
        local = {root: x.astype(root.dtype)}
        for e in needed:
            (local[e.outputs[0]],) = bind(e, [local[v] if v in local else consts[v] for v in e.inputs])
        return local[eqn.outputs[0]]

    # Named after its first non-affine equation (the non-linearity itself), not after where the value leaves
    # the group (a dtype conversion added by a later mean, say), so names do not depend on the dtype.
    scope = next((e.scope for e in needed if e.outputs[0] not in run.analysis.affine), eqn.scope)
    return fn, scope


def _activation_input(run, eqn: Eqn, root: Var) -> Var:
    """The group value ``eqn``'s non-linearity starts from: the last affine one, or ``root``.

    In conv -> batch norm -> relu6 the group's root is the conv output and the
    batch-norm output is affine in it. Starting the activation there (its delta is
    the conv delta times the batch-norm scale, which ``ops.activation`` takes
    fused) leaves a function that is a named activation (relu6) with no
    per-channel constants, so it runs on the native kernels. The value chosen is
    the deepest one that every non-affine equation leading to ``eqn`` derives from
    through affine equations alone; ``root`` when there is none.
    """
    affine, producer = run.analysis.affine, run.analysis.producer

    def edge(v):  # an affine value or the root: where the non-affine part of the group starts reading
        return v is root or v in affine

    _, read = _read_back(run, eqn, edge)
    frontier = {v for v in read if edge(v)}

    def ancestors(v):  # v and the group values it derives from, up to the root
        return {v} if v is root else {v} | _read_back(run, producer[v], lambda u: u is root)[1]

    common = set.intersection(*(ancestors(v) for v in frontier)) if frontier else {root}
    start = max(common, key=lambda v: len(ancestors(v)))
    # Every path back from eqn must stop at `start`: a frontier value that also reads the root some other way
    # (x_bn + x, say) keeps the root.
    _, read = _read_back(run, eqn, lambda v: v is start or v is root)
    return root if start is not root and root in read else start


_PROBE = np.concatenate([np.linspace(-9.0, 9.0, 3601), [-1e3, -1e-3, 0.0, 1e-3, 1e3]]).astype(np.float32)


def _probe_result(fn, shape) -> np.ndarray | None:
    """``fn`` on the probe values laid out in ``shape`` (repeated to fill it), as float32 ``[size]``; None where it
    cannot run on concrete values (traced constants, say) or does not keep the probe's shape."""
    try:
        with jax.ensure_compile_time_eval():
            got = fn(jnp.asarray(np.resize(_PROBE, shape)))
        return np.asarray(got, np.float32).reshape(-1) if got.shape == tuple(shape) else None
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError, TypeError, ValueError):
        return None


def named_activation(fn, shape, dtype) -> ops.Activation | None:
    """The named activation that ``fn`` computes element-wise, recognised numerically, or None.

    A named activation runs on the native kernels (a Python callable runs on the
    reference). ``fn`` must give the same values as the name on every probe value,
    the same in every channel and pixel, else (constants that vary per channel,
    traced parameters, anything else) the callable is kept. It is evaluated on the
    probe laid out along the last axis alone (``[1, ..., 1, P]``) where that runs
    and keeps the shape: a constant of ``fn`` then broadcasts to both that and the
    layer's ``shape`` only if it is one number, so the values cannot depend on the
    position, and the few small programs evaluated are the same for every layer of
    a rank and dtype (EfficientNet-Lite0's first delta program in a process spent
    2.6 s here with the layers' own shapes). Else it is evaluated on a probe of the
    layer's shape and checked for position.
    """
    size = int(np.prod(shape))
    tolerance = {"float32": 1e-6, "bfloat16": 2.0**-7, "float16": 2.0**-10}.get(np.dtype(dtype).name)
    if size < _PROBE.size or tolerance is None:
        return None
    compact = (1,) * (len(shape) - 1) + (_PROBE.size,)
    got = _probe_result(fn, compact) if shape[-1] != _PROBE.size else None  # [.., P] channels: a constant could be [P]
    if got is None:
        got = _probe_result(fn, shape)
        if got is None or not np.array_equal(got, np.resize(got[: _PROBE.size], size), equal_nan=True):
            return None  # not concrete, or depends on the position, not only on the value
    got = got[: _PROBE.size]
    slope = float(got[_PROBE.size - 4]) / -1e-3  # value at -1e-3 gives a leaky ReLU's slope
    candidates = [ops.Activation(n) for n in ops.ACTIVATION_NAMES if n not in ("leaky_relu", "prelu")]
    candidates.append(ops.Activation("leaky_relu", negative_slope=round(slope, 6)))
    for act in candidates:
        if np.allclose(got, _probe_values(act), rtol=tolerance, atol=tolerance / 10):
            return act
    return None


def prelu_slopes(run, eqn: Eqn, start: Var) -> jax.Array | None:
    """The ``[C]`` float32 slopes when the group from ``start`` to ``eqn`` is a per-channel PReLU, else None.

    The pattern is that of ``jnp.where(x >= 0, x, slopes * x)`` (Flax's PReLU, the
    super-resolution model's): ``select_n(ge(x, 0), mul(s, x), x)`` with ``s`` a
    frame-independent value that is one number per channel (``[C]``, ``[1, 1, 1, C]``
    or such a vector broadcast over the pixels) or one number. ``s`` is read as it
    is, so traced parameters stay traced (the native kernel takes them as a buffer).
    """
    x, channels = start, start.shape[-1]
    if eqn.name != "select_n" or len(eqn.inputs) != 3 or eqn.inputs[2] is not x:
        return None
    pred, neg = (run.analysis.producer.get(v) for v in eqn.inputs[:2])
    if pred is None or neg is None or (pred.name, neg.name) != ("ge", "mul") or pred.inputs[0] is not x:
        return None
    if not _is_zero(run, pred.inputs[1]) or x not in neg.inputs or len(neg.inputs) != 2:
        return None
    s = neg.inputs[1] if neg.inputs[0] is x else neg.inputs[0]
    if run.kind_of(s) != "const":
        return None
    while (e := run.analysis.producer.get(s)) is not None and _keeps_channels(e, channels):
        s = e.inputs[0]
    shape = _shape(s)
    if any(d != 1 for d in shape[:-1]) or (shape and shape[-1] not in (1, channels)):
        return None
    return jnp.broadcast_to(jnp.reshape(run.read(s), (-1,)), (channels,)).astype(jnp.float32)


def _is_zero(run, v) -> bool:
    """Whether ``v`` is a literal or constant scalar 0 known at trace time."""
    return isinstance(v, Const) and np.shape(v.value) == () and float(v.value) == 0.0


def _shape(v) -> tuple[int, ...]:
    return tuple(v.shape) if isinstance(v, Var) else np.shape(v.value)


def _keeps_channels(eqn: Eqn, channels: int) -> bool:
    """Whether ``eqn`` only broadcasts, reshapes or converts a per-channel vector (its value per channel is its
    input's): a broadcast along the last axis, a reshape to ``[1, ..., 1, C]``, a dtype conversion."""
    if eqn.name == "convert_element_type":
        return True
    (out,) = eqn.outputs
    if eqn.name == "broadcast_in_dim":
        src = _shape(eqn.inputs[0])
        return not src or (eqn.params["broadcast_dimensions"] == (len(out.shape) - 1,) and src == (channels,))
    return eqn.name == "reshape" and all(d == 1 for d in out.shape[:-1]) and out.shape[-1] == channels


@functools.cache
def _probe_values(act: ops.Activation) -> np.ndarray:
    with jax.ensure_compile_time_eval():  # concrete even while a jit is tracing
        return np.asarray(act(jnp.asarray(_PROBE)), np.float32)


def _group_member(run, eqn: Eqn, root: Var) -> None:
    """An element-wise equation inside a group: affine values now, activations where values leave the group."""
    (out,) = eqn.outputs
    frame = _frame_flags(run, eqn)
    affine = out in run.analysis.affine
    if run.init:
        (value,) = bind(eqn, [run.read(v) for v in eqn.inputs])
    elif affine:
        roles, operands = linear_roles(eqn, frame), [run.read(v) for v in eqn.inputs]
        value = _scale_folded_into_conv(run, eqn, roles, operands, root)
        value = _fast_linear(eqn, roles, operands) if value is None else value
        value = _linear_values(eqn, roles, operands) if value is None else value
        _track_scaled(run, eqn, roles, operands)
    else:
        value = None
    run.set(out, value, "delta")
    if out not in run.analysis.escapes:
        return
    if affine:
        if run.analysis.private_roots.get(root) is out and _group_fed_back(run, root):
            _group_feedback(run, eqn, root)
        return
    fn, scope = _group_fn(run, eqn, root)
    if not (len(root.shape) == 4 and is_float(out.dtype) and out.shape == root.shape):
        run.set(out, fn(run.need_dense(root)), "dense")
        return
    start = _activation_input(run, eqn, root)
    slopes = prelu_slopes(run, eqn, start)
    if slopes is not None:
        act = ops.Activation("prelu")
    else:
        if start is not root:
            fn, _ = _group_fn(run, eqn, start)
        act = named_activation(fn, start.shape, start.dtype) or ops.Activation(fn)
    name = run.node(scope, "act")
    if run.init:
        value, run.states[name] = ops.activation_init(run.read(start), act, slopes)
    else:
        value, run.states[name] = _activation_step(run, name, root, start, act, slopes, run.config.truncation_for(name))
    run.record(name, value)
    run.set(out, value, "delta")
    run.hold(out, name, _refresh.held("sent"))
    run.refreshes(name, "acc", start)


def _group_feedback(run, eqn: Eqn, root: Var) -> None:
    """The feedback node of a group that ends without an activation (a projection conv -> batch norm): the identity
    rule, fused with the conv (its float32 result times the batch-norm scale) where the group's delta is the conv's
    scaled by per-channel factors."""
    (out,) = eqn.outputs
    name = run.node(eqn.scope, "feedback")
    if run.init:
        value, run.states[name] = ops.activation_init(run.read(out), _IDENTITY)
    else:
        value, run.states[name] = _activation_step(run, name, root, out, _IDENTITY, None, _EXACT)
    run.record(name, value)
    run.set(out, value, "delta")
    _holds_sent(run, out, name, eqn)


def _multi_root(run, eqn: Eqn, frame) -> None:
    """Element-wise equation on several frame-dependent values: the add/linear rule or the binary rule."""
    frame_vars = [v for v, f in zip(eqn.inputs, frame, strict=True) if f]
    roles = linear_roles(eqn, frame)
    (out,) = eqn.outputs
    if not all(run.can_delta(v) for v in frame_vars):
        _fallback(run, eqn)
        return
    if roles is not None:
        a, b = (eqn.inputs + (None,))[:2]
        if eqn.name == "add" and frame == (True, True) and a.shape == b.shape == out.shape and len(out.shape) == 4:
            x, y = run.need_delta(a), run.need_delta(b)
            if not _fed_back(run, out):
                run.set(out, ops.add(x, y) if run.init else ops.add(to_delta(x), to_delta(y)), "delta")
                return
            name = run.node(eqn.scope, "feedback")  # the float32 sum accumulated, its rounding sent later
            if run.init:
                value, run.states[name] = ops.add_activation_init(x, y, _IDENTITY)
            else:
                value, run.states[name] = ops.add_activation(
                    run.state(name), to_delta(x), to_delta(y), _IDENTITY, _EXACT
                )
            run.record(name, value)
            run.set(out, value, "delta")
            _holds_sent(run, out, name, eqn)
        else:
            _linear(run, eqn, roles)
        return
    if len(frame_vars) != 2 or len(out.shape) != 4 or not is_float(out.dtype):
        _fallback(run, eqn)
        return
    x, y = frame_vars
    if x.shape != out.shape:
        x, y = y, x
    if x.shape != out.shape:
        _fallback(run, eqn)
        return
    consts = {v: run.read(v) for v in eqn.inputs if run.kind_of(v) == "const"}

    def fn(ax, ay):
        local = {x: ax.astype(x.dtype), y: ay.astype(y.dtype)}
        (r,) = bind(eqn, [local[v] if v in local else consts[v] for v in eqn.inputs])
        return r

    # A plain product or maximum of the two values (a squeeze-excite gate, say) runs on the native kernels.
    if not consts and x.dtype == y.dtype and eqn.name in _NAMED_BINARY:
        fn = _NAMED_BINARY[eqn.name]

    name = run.node(eqn.scope, "binary")
    dx, dy = run.need_delta(x), run.need_delta(y)
    if run.init:
        value, run.states[name] = ops.binary_init(dx, dy, fn)
    else:
        value, run.states[name] = ops.binary(run.state(name), to_delta(dx), to_delta(dy), fn)
    run.record(name, value)
    run.set(out, value, "delta")
    run.refreshes(name, "acc_x", x)
    run.refreshes(name, "acc_y", y, "rows" if y.shape[1] == x.shape[1] else "whole")

    def held(st, bands, start, h):  # the function of the accumulated operands
        first = bands.value(start)
        rows_y = _refresh.rows(st.acc_y, first, h) if st.acc_y.shape[1] == st.acc_x.shape[1] else st.acc_y
        return fn(_refresh.rows(st.acc_x, first, h), rows_y)

    run.hold(out, name, held)


_NAMED_BINARY = {"mul": jnp.multiply, "max": jnp.maximum}  # the functions ops.binary has native kernels for

_RULES = {
    "conv_general_dilated": _conv,
    "dot_general": _dot_general,
    "reduce_window_max": _max_pool,
    "reduce_sum": _reduce_sum,
}
