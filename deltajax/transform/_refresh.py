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
reshape, a transposed convolution, a resize) is left to the keyframes
(``Stepper.unrefreshed`` names it). A global average pool's vector is
recomputed whole on every step (at the end of a classifier its input is the
network's smallest map), and so is a squeeze-excite gate's one-row map.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

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
    """A band's first row: ``scale * b + offset``, ``b`` the first row of this step's band of a map of ``height``
    rows (``band_rows``). Symbolic, so that two requests for the same rows of a value share one result."""

    height: int
    scale: int = 1
    offset: int = 0

    def moved(self, scale: int, offset: int) -> Start:
        """The start ``scale * self + offset``."""
        return Start(self.height, self.scale * scale, self.offset * scale + offset)


WHOLE = 0  # Start(height, WHOLE): row 0 of the map, whatever the step


def band_rows(height: int, phase, period: int) -> tuple[jax.Array, int]:
    """``(start, h)``: the band a node of ``height`` rows recomputes at ``phase`` (``0 .. period - 1``): rows
    ``[start, start + h)`` with ``h = ceil(height / period)``, within the map, covering it in ``period`` steps."""
    h = -(-height // period)
    return jnp.minimum((phase * height) // period, height - h).astype(jnp.int32), h


def rows(x: jax.Array, start, h: int) -> jax.Array:
    """Rows ``[start, start + h)`` of ``x`` ``[N, H, W, C]``, zero where a row is outside ``[0, H)``.

    Slices: ``h`` rows from where they fit in ``x``, then, padded with ``h`` zero rows each side, ``h`` rows
    shifted by how far the band overhangs the map (0 unless it starts above it or ends below it)."""
    height = x.shape[1]
    if h > height:  # a band taller than the map (a small map's halo): pad the map itself
        x, start, height = jnp.pad(x, ((0, 0), (h, h), (0, 0), (0, 0))), start + h, height + 2 * h
    fit = jnp.clip(start, 0, height - h)
    inside = lax.dynamic_slice_in_dim(x, fit, h, axis=1)
    padded = jnp.pad(inside, ((0, 0), (h, h), (0, 0), (0, 0)))
    # a band entirely outside the map reads only zeros (lax.dynamic_slice would wrap a negative start)
    return lax.dynamic_slice_in_dim(padded, jnp.clip(h + start - fit, 0, 2 * h), h, axis=1)


def _masked(band: jax.Array, start, height: int, fill) -> jax.Array:
    """``band`` (rows ``[start, start + h)`` of a map of ``height`` rows) with ``fill`` in rows outside the map."""
    index = start + jnp.arange(band.shape[1])
    valid = (index >= 0) & (index < height)
    return jnp.where(valid[None, :, None, None], band, jnp.asarray(fill, band.dtype))


def _shape(v) -> tuple[int, ...]:
    return tuple(v.shape) if isinstance(v, Var) else jnp.shape(v.value)


def _bind(eqn: Eqn, values, **params) -> jax.Array:
    return eqn.primitive.bind(*values, **{**eqn.params, **params})


def _rows_in(start: Start, h: int, stride: int, size: int, dilation: int, pad_lo: int) -> tuple[Start, int]:
    """The input rows that output rows ``[start, start + h)`` of a window (``size`` taps ``dilation`` apart,
    ``stride``, ``pad_lo`` rows of padding above) read."""
    return start.moved(stride, -pad_lo), (h - 1) * stride + (size - 1) * dilation + 1


class Bands:
    """The rows of values that one step's refresh reads (``run``: the step's ``_interpret.Run``; ``phase``: int32
    scalar in ``[0, period)``), each computed once."""

    def __init__(self, run, phase, period: int):
        self.run, self.phase, self.period = run, phase, period
        self._bases: dict = {}
        self._memo: dict = {}

    def value(self, start: Start):
        """The traced row ``start`` stands for."""
        if start.scale == WHOLE:
            return jnp.int32(start.offset)
        if start.height not in self._bases:
            self._bases[start.height] = band_rows(start.height, self.phase, self.period)[0]
        return start.scale * self._bases[start.height] + start.offset

    def of(self, var, start: Start, h: int) -> jax.Array:
        """Rows ``[start, start + h)`` of the value ``var`` holds (in its dtype); rows outside the map are
        unspecified (a windowed rule masks its operand)."""
        run = self.run
        if isinstance(var, Const):
            return var.value
        key = (var, start, h)
        if key not in self._memo:
            if var in run.holders:
                value = run.holders[var](self, start, h).astype(var.dtype)
            elif run.kind_of(var) != "delta":  # a constant, or a value held densely in this frame
                value = run.read(var)
                value = rows(value, self.value(start), h) if len(var.shape) == 4 else value
            else:
                value = self.eqn(run.analysis.producer[var], start, h)
            self._memo[key] = value
        return self._memo[key]

    def eqn(self, eqn: Eqn, start: Start, h: int, operand: Callable | None = None) -> jax.Array:
        """Rows ``[start, start + h)`` of ``eqn``'s output, from rows of its operands (``operand(var, start, h)``,
        default ``of``); raises ``NotRefreshable`` for a primitive without a band rule."""
        operand = operand or self.of
        (out,) = eqn.outputs if len(eqn.outputs) == 1 else (None,)
        if out is None or len(out.shape) != 4:
            raise NotRefreshable(eqn.name)
        if eqn.name in ELEMENTWISE or (eqn.name == "concatenate" and eqn.params["dimension"] == 3):
            # an operand with one row (a per-channel constant, a gate) broadcasts over the rows: taken whole
            banded = [len(_shape(v)) == 4 and _shape(v)[1] == out.shape[1] for v in eqn.inputs]
            values = [operand(v, start, h) if b else self._whole(v) for v, b in zip(eqn.inputs, banded, strict=True)]
            return _bind(eqn, values)
        rule = {
            "dot_general": self._pixelwise_matmul,
            "conv_general_dilated": self._conv,
            "reduce_window_sum": self._window,
            "reduce_window_max": self._window,
            "pad": self._pad,
        }.get(eqn.name)
        if rule is None:
            raise NotRefreshable(eqn.name)
        return rule(eqn, start, h, operand)

    def _whole(self, v):
        return v.value if isinstance(v, Const) else self.run.read(v)

    def _frame_dependent(self, v) -> bool:
        return isinstance(v, Var) and self.run.kind_of(v) != "const"

    def _conv(self, eqn: Eqn, start: Start, h: int, operand) -> jax.Array:
        lhs, rhs = eqn.inputs
        p = eqn.params
        dims = p["dimension_numbers"]
        if (
            self._frame_dependent(rhs)
            or tuple(dims.lhs_spec) != _NHWC
            or tuple(dims.out_spec) != _NHWC
            or tuple(p["lhs_dilation"]) != (1, 1)
            or p["batch_group_count"] != 1
            or min(p["padding"][0]) < 0
        ):
            raise NotRefreshable("conv_general_dilated")
        size = _shape(rhs)[dims.rhs_spec[2]]
        s, n = _rows_in(start, h, p["window_strides"][0], size, p["rhs_dilation"][0], p["padding"][0][0])
        x = _masked(operand(lhs, s, n), self.value(s), lhs.shape[1], 0.0)
        return _bind(eqn, [x, self._whole(rhs)], padding=((0, 0), tuple(p["padding"][1])))

    def _pixelwise_matmul(self, eqn: Eqn, start: Start, h: int, operand) -> jax.Array:
        """A matmul over the channels of an NHWC value (a 1x1 convolution written as ``x @ w``)."""
        lhs, rhs = eqn.inputs
        (contract, batch) = eqn.params["dimension_numbers"]
        if self._frame_dependent(rhs) or tuple(contract[0]) != (3,) or len(_shape(lhs)) != 4 or batch[0]:
            raise NotRefreshable("dot_general")
        return _bind(eqn, [operand(lhs, start, h), self._whole(rhs)])

    def _window(self, eqn: Eqn, start: Start, h: int, operand) -> jax.Array:
        """A pooling window (``reduce_window_sum`` or ``_max``) over the rows and columns of an NHWC value."""
        (x,) = eqn.inputs
        p = eqn.params
        win, strides, pads = p["window_dimensions"], p["window_strides"], p["padding"]
        if win[0] != 1 or strides[0] != 1 or tuple(pads[0]) != (0, 0) or set(p["base_dilation"]) != {1}:
            raise NotRefreshable(eqn.name)
        s, n = _rows_in(start, h, strides[1], win[1], p["window_dilation"][1], pads[1][0])
        fill = -jnp.inf if eqn.name == "reduce_window_max" else 0.0
        band_in = _masked(operand(x, s, n), self.value(s), x.shape[1], fill)
        return _bind(eqn, [band_in], padding=((0, 0), (0, 0), *map(tuple, pads[2:])))

    def _pad(self, eqn: Eqn, start: Start, h: int, operand) -> jax.Array:
        x, value = eqn.inputs
        config = eqn.params["padding_config"]
        (lo, _, interior) = config[1]
        if self._frame_dependent(value) or interior != 0 or float(self._whole(value)) != 0.0:
            raise NotRefreshable("pad")
        s = start.moved(1, -lo)
        band_in = _masked(operand(x, s, h), self.value(s), x.shape[1], 0.0)
        return _bind(eqn, [band_in, self._whole(value)], padding_config=(config[0], (0, 0, 0), *config[2:]))

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
                whole = bands.source(target, Start(height, WHOLE), height).astype(old.dtype)
                new = jnp.mean(whole, axis=(1, 2)) if target.extent == "mean" else whole
        except NotRefreshable as e:
            run.unrefreshed[target.name] = e.args[0]
            continue
        run.states[target.name] = state._replace(**{target.field: new})
