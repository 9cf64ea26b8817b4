"""Rolling refresh: each delta step recomputes a band of rows of every stateful node's accumulated input.

A delta step adds its rounding to the state it updates (the convolution of a
delta is rounded, then added to an accumulator), so the accumulated inputs
random-walk away from what their producers hold. A keyframe rebuilds all of
them at the cost of a dense frame (``DeltaConfig.refresh_every``). The rolling
refresh (``DeltaConfig.rolling_refresh``, period ``P``) spreads that work out, as
a video codec's intra refresh does: each delta step recomputes, in every
stateful node with ``H`` rows, a band of ``ceil(H / P)`` rows, so that every row
of every node is recomputed once per ``P`` delta steps.

A node's accumulated input is recomputed from what its producers *hold*: the
total their consumers have received (an activation's ``sent``, a sparsify's
``ref``, a max pool's or binary node's function of its accumulated operands),
through the linear layers between them (convolutions, batch norm, adds, pads,
concats, pools), evaluated on the band and its halo only. The node's own
emitted total is left as it is, so a refresh emits nothing: an activation's
corrected ``acc`` reaches its consumers with its next update (``f(acc) -
sent``), and the consumers' own refresh recomputes them from the ``sent`` they
have actually received. Each node's error is then what it has accumulated
since its band last passed, whatever the depth of the network.

A node whose input passes through a primitive with no band rule here (a
bilinear resize: its rows are contracted with a matrix, so a band would read the whole map resized along the
columns on every step) is left to the keyframes (``Stepper.unrefreshed`` names it). Reshapes, transposes and
broadcasts (a pixel shuffle, a nearest upsampling) carry the rows along whichever axis holds them, and a
transposed convolution reads the input rows its band's dilated window covers. A global average pool's vector is
recomputed whole on every step (at the end of a classifier its input is the
network's smallest map), and so is a squeeze-excite gate's one-row map.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from deltajax import ops
from deltajax.transform._analysis import ELEMENTWISE
from deltajax.transform._jaxpr import Const, Eqn, Var

_NHWC = (0, 3, 1, 2)


class NotRefreshable(Exception):
    """A value on the way to a node's input has no band rule (the message names the primitive)."""


@dataclasses.dataclass(frozen=True)
class Target:
    """A state array to recompute: ``run.states[name]``'s ``field`` is the value of ``source`` (a Var, or an Eqn's
    one output computed by its rule: where the node's own output Var is that Eqn's).

    ``extent``: "rows" (``[N, H, W, C]``, a band per step), "whole" (a map of one row, a squeeze-excite gate:
    all of it every step) or "mean" (``[N, C]``, the mean of ``source`` over its pixels, a global average pool:
    all of it every step)."""

    name: str
    field: str
    source: Var | Eqn
    extent: str = "rows"


@dataclasses.dataclass(frozen=True)
class Start:
    """A band's first row: ``(scale * base + offset) // divisor``, where ``base`` is the first row of this step's
    band of a map of ``base`` rows (an int: ``band_rows``) or another Start. Symbolic, so that two requests for
    the same rows of a value share one result."""

    base: int | Start
    scale: int = 1
    offset: int = 0
    divisor: int = 1

    def moved(self, scale: int, offset: int) -> Start:
        """The start ``scale * self + offset``."""
        if self.divisor == 1:
            return Start(self.base, self.scale * scale, self.offset * scale + offset)
        return Start(self, scale, offset)

    def floordiv(self, divisor: int) -> Start:
        """The start ``self // divisor``."""
        return Start(self.base, self.scale, self.offset, self.divisor * divisor)


WHOLE = 0  # Start(height, WHOLE): row 0 of the map, whatever the step


def whole_map(height: int) -> Start:
    """The start of a band that is the whole map of ``height`` rows."""
    return Start(height, WHOLE)


def band_rows(height: int, phase, period: int) -> tuple[jax.Array, int]:
    """``(start, h)``: the band a node of ``height`` rows recomputes at ``phase`` (``0 .. period - 1``): rows
    ``[start, start + h)`` with ``h = ceil(height / period)``, within the map, covering it in ``period`` steps."""
    h = -(-height // period)
    return jnp.minimum((phase * height) // period, height - h).astype(jnp.int32), h


def _pad_axis(x: jax.Array, axis: int, lo: int, hi: int) -> jax.Array:
    return jnp.pad(x, [(lo, hi) if i == axis else (0, 0) for i in range(x.ndim)])


def rows(x: jax.Array, start, h: int, axis: int = 1) -> jax.Array:
    """Rows ``[start, start + h)`` of ``x`` along ``axis`` (an NHWC map's rows by default), zero where a row is
    outside the array.

    Slices: ``h`` rows from where they fit in ``x``, then, padded with ``h`` zero rows each side, ``h`` rows
    shifted by how far the band overhangs the map (0 unless it starts above it or ends below it)."""
    height = x.shape[axis]
    if h > height:  # a band taller than the map (a small map's halo): pad the map itself
        x, start, height = _pad_axis(x, axis, h, h), start + h, height + 2 * h
    fit = jnp.clip(start, 0, height - h)
    inside = lax.dynamic_slice_in_dim(x, fit, h, axis=axis)
    # a band entirely outside the map reads only zeros (lax.dynamic_slice would wrap a negative start)
    return lax.dynamic_slice_in_dim(_pad_axis(inside, axis, h, h), jnp.clip(h + start - fit, 0, 2 * h), h, axis=axis)


def _masked(band: jax.Array, start, height: int, fill, axis: int = 1) -> jax.Array:
    """``band`` (rows ``[start, start + h)`` along ``axis`` of a map of ``height`` rows) with ``fill`` in rows
    outside the map."""
    index = start + jnp.arange(band.shape[axis])
    valid = ((index >= 0) & (index < height)).reshape([-1 if i == axis else 1 for i in range(band.ndim)])
    return jnp.where(valid, band, jnp.asarray(fill, band.dtype))


def _shape(v) -> tuple[int, ...]:
    return tuple(v.shape) if isinstance(v, Var) else jnp.shape(v.value)


def _bind(eqn: Eqn, values, **params) -> jax.Array:
    return eqn.primitive.bind(*values, **{**eqn.params, **params})


def _rows_in(start: Start, h: int, stride: int, size: int, dilation: int, pad_lo: int) -> tuple[Start, int]:
    """The input rows that output rows ``[start, start + h)`` of a window (``size`` taps ``dilation`` apart,
    ``stride``, ``pad_lo`` rows of padding above) read."""
    return start.moved(stride, -pad_lo), (h - 1) * stride + (size - 1) * dilation + 1


def kernel_hwio(kernel: jax.Array, dims) -> jax.Array:
    """A convolution's kernel in ``[kh, kw, C_in / groups, C_out]`` layout, from its ``ConvDimensionNumbers``."""
    return jnp.transpose(kernel, (dims.rhs_spec[2], dims.rhs_spec[3], dims.rhs_spec[1], dims.rhs_spec[0]))


def _depthwise(x: jax.Array, w: jax.Array, eqn: Eqn) -> jax.Array:
    """A depthwise convolution (``eqn``, kernel ``w`` ``[kh, kw, 1, C]``) of a band ``x`` ``[N, n, W, C]`` whose rows
    are its window's (no row padding) as a sum over the taps of strided slices times per-channel weights: one
    fused loop. XLA's grouped convolution of a band of a few rows costs up to a millisecond on a CPU (1x48x672,
    5x5: 0.8 M multiply-adds), more than the rest of a delta step's refresh together."""
    p = eqn.params
    (sh, sw), (dh, dw) = p["window_strides"], p["rhs_dilation"]
    rows_out, cols_out = (x.shape[1] - (w.shape[0] - 1) * dh - 1) // sh + 1, eqn.outputs[0].shape[2]
    x = _pad_axis(x, 2, *p["padding"][1]).astype(jnp.float32)
    out = 0.0
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            tap = lax.slice(
                x,
                (0, i * dh, j * dw, 0),
                (x.shape[0], i * dh + (rows_out - 1) * sh + 1, j * dw + (cols_out - 1) * sw + 1, x.shape[3]),
                (1, sh, sw, 1),
            )
            out = out + tap * w[i, j, 0].astype(jnp.float32)[None, None, None, :]
    return out


def _native_conv(x: jax.Array, hwio: jax.Array, eqn: Eqn) -> jax.Array:
    """``eqn`` (a convolution) of a 16-bit band ``x`` ``[N, n, W, C]`` whose rows are its window's (no row
    padding), on the delta step's own convolution kernels, every pixel active: XLA's CPU convolution converts
    16-bit operands, the weights included, to float32 on every call (EfficientNet-Lite0 in bfloat16: 84
    conversions, 9 ms of a 2-core CPU's step, against 5 ms for the whole refresh this way). In float32 XLA's
    own is faster (0.13 ms a call here against its 0.04)."""
    p = eqn.params
    band = ops.Delta(x, jnp.ones(x.shape[:3], bool))
    return ops.conv(
        band,
        hwio,
        strides=tuple(p["window_strides"]),
        padding=((0, 0), tuple(p["padding"][1])),
        dilation=tuple(p["rhs_dilation"]),
        groups=p["feature_group_count"],
        precision=p["precision"],
    ).values


def _with(values: tuple, index: int, value) -> tuple:
    return (*values[:index], value, *values[index + 1 :])


class Bands:
    """The rows of values that one step's refresh reads (``run``: the step's ``_interpret.Run``; ``phase``: int32
    scalar in ``[0, period)``), each computed once.

    A value's rows are along one of its axes: an NHWC map's axis 1, or, inside a chain of reshapes and transposes
    (a pixel shuffle), the axis that becomes it."""

    def __init__(self, run, phase, period: int):
        self.run, self.phase, self.period = run, phase, period
        self._bases: dict = {}
        self._memo: dict = {}

    def value(self, start: Start):
        """The traced row ``start`` stands for."""
        if start.scale == WHOLE:
            return jnp.int32(start.offset // start.divisor)
        if isinstance(start.base, Start):
            base = self.value(start.base)
        else:
            if start.base not in self._bases:
                self._bases[start.base] = band_rows(start.base, self.phase, self.period)[0]
            base = self._bases[start.base]
        first = start.scale * base + start.offset
        return first if start.divisor == 1 else first // start.divisor

    def of(self, var, start: Start, h: int, axis: int = 1) -> jax.Array:
        """Rows ``[start, start + h)`` along ``axis`` of the value ``var`` holds (in its dtype); rows outside the
        map are unspecified (a windowed rule masks its operand)."""
        run = self.run
        if isinstance(var, Const):
            return var.value
        key = (var, start, h, axis)
        if key not in self._memo:
            if var in run.holders:
                if axis != 1:  # a held map's rows are its axis 1
                    raise NotRefreshable(self._producer(var))
                value = run.holders[var](self, start, h).astype(var.dtype)
            elif run.kind_of(var) != "delta":  # a constant, or a value held densely in this frame
                value = run.read(var)
                value = rows(value, self.value(start), h, axis) if len(var.shape) > axis else value
            else:
                value = self.eqn(run.analysis.producer[var], start, h, axis=axis)
            self._memo[key] = value
        return self._memo[key]

    def whole(self, v):
        """The whole value of an operand that a band reads entirely: a constant, a value held densely or by its
        producer, or a gate ``[N, 1, 1, C]``; raises ``NotRefreshable`` for a map that would be recomputed whole
        on every step."""
        if not self._frame_dependent(v):
            return v.value if isinstance(v, Const) else self.run.read(v)
        shape = _shape(v)
        gate = len(shape) == 4 and shape[1] == shape[2] == 1
        if not (gate or v in self.run.holders or self.run.kind_of(v) != "delta"):
            raise NotRefreshable(self._producer(v))
        return self.of(v, whole_map(shape[1]), shape[1])

    def _producer(self, var: Var) -> str:
        eqn = self.run.analysis.producer.get(var)
        return "input" if eqn is None else eqn.name

    def eqn(self, eqn: Eqn, start: Start, h: int, operand: Callable | None = None, axis: int = 1) -> jax.Array:
        """Rows ``[start, start + h)`` along ``axis`` of ``eqn``'s output, from rows of its operands
        (``operand(var, start, h, axis)``, default ``of``); raises ``NotRefreshable`` for a primitive without a
        band rule."""
        operand = operand or self.of
        (out,) = eqn.outputs if len(eqn.outputs) == 1 else (None,)
        if out is None or len(out.shape) <= axis:
            raise NotRefreshable(eqn.name)
        if eqn.name in ELEMENTWISE or (eqn.name == "concatenate" and eqn.params["dimension"] != axis):
            # an operand with one row (a per-channel constant, a gate) broadcasts over the rows: taken whole
            values = [
                operand(v, start, h, axis)
                if len(_shape(v)) == len(out.shape) and _shape(v)[axis] == out.shape[axis]
                else self.whole(v)
                for v in eqn.inputs
            ]
            return _bind(eqn, values)
        rule = {
            "dot_general": self._dot_general,
            "conv_general_dilated": self._conv,
            "reduce_window_sum": self._window,
            "reduce_window_max": self._window,
            "pad": self._pad,
            "transpose": self._transpose,
            "reshape": self._reshape,
            "broadcast_in_dim": self._broadcast,
        }.get(eqn.name)
        if rule is None:
            raise NotRefreshable(eqn.name)
        return rule(eqn, start, h, operand, axis)

    def _frame_dependent(self, v) -> bool:
        return isinstance(v, Var) and self.run.kind_of(v) != "const"

    def _conv(self, eqn: Eqn, start: Start, h: int, operand, axis: int) -> jax.Array:
        """A convolution over an NHWC map, transposed (``lhs_dilation``) or not."""
        lhs, rhs = eqn.inputs
        p = eqn.params
        dims = p["dimension_numbers"]
        dilation, stride = p["lhs_dilation"][0], p["window_strides"][0]
        if (
            axis != 1
            or self._frame_dependent(rhs)
            or tuple(dims.lhs_spec) != _NHWC
            or tuple(dims.out_spec) != _NHWC
            or (dilation > 1 and stride > 1)
            or p["batch_group_count"] != 1
        ):
            raise NotRefreshable("conv_general_dilated")
        size = _shape(rhs)[dims.rhs_spec[2]]
        taps, lo = (size - 1) * p["rhs_dilation"][0] + 1, p["padding"][0][0]
        kernel = self.whole(rhs)
        if dilation == 1:
            s, n = _rows_in(start, h, stride, size, p["rhs_dilation"][0], lo)
            x = _masked(operand(lhs, s, n, 1), self.value(s), lhs.shape[1], 0.0)
            if p["feature_group_count"] == lhs.shape[3] == eqn.outputs[0].shape[3] > 1:
                return _depthwise(x, kernel_hwio(kernel, dims), eqn).astype(eqn.outputs[0].dtype)
            if eqn.outputs[0].dtype == x.dtype == kernel.dtype and x.dtype.itemsize == 2:
                return _native_conv(x, kernel_hwio(kernel, dims), eqn)
            return _bind(eqn, [x, kernel], padding=((0, 0), tuple(p["padding"][1])))
        # Transposed: input row i sits at row i * dilation of the dilated input, output row o reads dilated rows
        # [o - lo, o - lo + taps). The band's n input rows from s cover them; its output starts `skip` rows early.
        first = start.moved(1, -lo)
        s = first.floordiv(dilation)
        n = (dilation + h + taps - 3) // dilation + 1
        x = _masked(operand(lhs, s, n, 1), self.value(s), lhs.shape[1], 0.0)
        hi = dilation - 1 + h - 1 - (n - 1) * dilation + taps - 1
        out = _bind(eqn, [x, kernel], padding=((0, hi), tuple(p["padding"][1])))
        skip = self.value(first) - dilation * self.value(s)
        return lax.dynamic_slice_in_dim(out, skip, h, axis=1)

    def _dot_general(self, eqn: Eqn, start: Start, h: int, operand, axis: int) -> jax.Array:
        """A matmul without batch axes whose output rows are a free axis of one operand (a 1x1 convolution
        written as ``x @ w``, one pass of a separable resize); the other operand is read whole."""
        (contract, batch) = eqn.params["dimension_numbers"]
        if batch[0] or batch[1]:
            raise NotRefreshable("dot_general")
        free = [[i for i in range(len(_shape(v))) if i not in c] for v, c in zip(eqn.inputs, contract, strict=True)]
        side = 0 if axis < len(free[0]) else 1
        banded = free[side][axis - side * len(free[0])]
        values = [self.whole(v) for v in eqn.inputs]
        values[side] = operand(eqn.inputs[side], start, h, banded)
        return _bind(eqn, values)

    def _window(self, eqn: Eqn, start: Start, h: int, operand, axis: int) -> jax.Array:
        """A pooling window (``reduce_window_sum`` or ``_max``) over the rows and columns of an NHWC value."""
        (x,) = eqn.inputs
        p = eqn.params
        win, strides, pads = p["window_dimensions"], p["window_strides"], p["padding"]
        if axis != 1 or win[0] != 1 or strides[0] != 1 or tuple(pads[0]) != (0, 0) or set(p["base_dilation"]) != {1}:
            raise NotRefreshable(eqn.name)
        s, n = _rows_in(start, h, strides[1], win[1], p["window_dilation"][1], pads[1][0])
        fill = -jnp.inf if eqn.name == "reduce_window_max" else 0.0
        band_in = _masked(operand(x, s, n, 1), self.value(s), x.shape[1], fill)
        return _bind(eqn, [band_in], padding=((0, 0), (0, 0), *map(tuple, pads[2:])))

    def _pad(self, eqn: Eqn, start: Start, h: int, operand, axis: int) -> jax.Array:
        x, value = eqn.inputs
        config = eqn.params["padding_config"]
        (lo, _, interior) = config[axis]
        if self._frame_dependent(value) or interior != 0 or float(self.whole(value)) != 0.0:
            raise NotRefreshable("pad")
        s = start.moved(1, -lo)
        band_in = _masked(operand(x, s, h, axis), self.value(s), x.shape[axis], 0.0, axis)
        return _bind(eqn, [band_in, self.whole(value)], padding_config=_with(tuple(config), axis, (0, 0, 0)))

    def _transpose(self, eqn: Eqn, start: Start, h: int, operand, axis: int) -> jax.Array:
        (x,) = eqn.inputs
        return _bind(eqn, [operand(x, start, h, eqn.params["permutation"][axis])])

    def _reshape(self, eqn: Eqn, start: Start, h: int, operand, axis: int) -> jax.Array:
        """A reshape that keeps the rows, merges them with the next axis (``[.., H, r, ..] -> [.., H * r, ..]``:
        a pixel shuffle, a nearest upsampling) or splits them (``[.., H * r, ..] -> [.., H, r, ..]``)."""
        (x,) = eqn.inputs
        ins, outs = x.shape, eqn.outputs[0].shape
        size, before = outs[axis], math.prod(outs[:axis])
        if eqn.params["dimensions"] is not None:
            raise NotRefreshable("reshape")
        if size == 1:  # a map of one row (a gate): all of it
            return _bind(eqn, [self.whole(x)])
        # the input axis the rows come from: past as many elements as come before them, skipping axes of size 1
        for b in (b for b in range(len(ins)) if math.prod(ins[:b]) == before and ins[b] != 1):
            if ins[b] == size:  # the same rows
                return _bind(eqn, [operand(x, start, h, b)], new_sizes=_with(outs, axis, h))
            if axis + 1 < len(outs) and ins[b] == size * outs[axis + 1]:  # split: row o is input rows o * r ..
                r = outs[axis + 1]
                return _bind(eqn, [operand(x, start.moved(r, 0), h * r, b)], new_sizes=_with(outs, axis, h))
            if b + 1 < len(ins) and ins[b] * ins[b + 1] == size:  # merged: output row o is input row o // r
                r = ins[b + 1]
                s, n = start.floordiv(r), (h - 1) // r + 2
                merged = _bind(eqn, [operand(x, s, n, b)], new_sizes=_with(outs, axis, n * r))
                return lax.dynamic_slice_in_dim(merged, self.value(start) - r * self.value(s), h, axis=axis)
        raise NotRefreshable("reshape")

    def _broadcast(self, eqn: Eqn, start: Start, h: int, operand, axis: int) -> jax.Array:
        """A broadcast that keeps the operand's rows (``[N, H, W, C] -> [N, H, r, W, C]``), or copies an operand
        without them along the rows."""
        (x,) = eqn.inputs
        dims, out_shape = eqn.params["broadcast_dimensions"], eqn.params["shape"]
        shape = _with(tuple(out_shape), axis, h)
        if axis in dims and _shape(x)[dims.index(axis)] == out_shape[axis]:
            return _bind(eqn, [operand(x, start, h, dims.index(axis))], shape=shape)
        return _bind(eqn, [self.whole(x)], shape=shape)

    def source(self, target: Target, start: Start, h: int) -> jax.Array:
        """Rows of a target's source value."""
        if isinstance(target.source, Eqn):
            return self.eqn(target.source, start, h)
        return self.of(target.source, start, h)


def held(field: str | Callable) -> Callable:
    """``(state, bands, start, h) -> rows`` of a node state's ``field`` (an activation's ``sent``, a sparsify's
    ``ref``; or ``field(state)``)."""
    get = (lambda state: getattr(state, field)) if isinstance(field, str) else field
    return lambda state, bands, start, h: rows(get(state), bands.value(start), h)


def refresh(run, phase, period: int) -> None:
    """Recomputes in ``run.states`` the band of rows of each target of ``run`` for ``phase`` of ``period``; records
    in ``run.unrefreshed`` the nodes whose source has no band rule (name -> primitive)."""
    bands = Bands(run, phase, period)
    for target in run.refresh_targets:
        state = run.states[target.name]
        old = getattr(state, target.field)
        source = target.source.outputs[0] if isinstance(target.source, Eqn) else target.source
        height = source.shape[1]
        try:
            if target.extent == "rows":
                start = Start(height)
                h = band_rows(height, phase, period)[1]
                value = bands.source(target, start, h).astype(old.dtype)
                new = lax.dynamic_update_slice_in_dim(old, value, bands.value(start), axis=1)
            else:
                value = bands.source(target, whole_map(height), height).astype(old.dtype)
                new = jnp.mean(value, axis=(1, 2)) if target.extent == "mean" else value
        except NotRefreshable as e:
            run.unrefreshed[target.name] = e.args[0]
            continue
        run.states[target.name] = state._replace(**{target.field: new})
