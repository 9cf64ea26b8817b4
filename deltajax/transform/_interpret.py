"""Runs a flat program as a delta program: the first frame densely (building states), later frames on deltas.

Every value has a kind: ``CONST`` (frame-independent: computed densely from the
parameters), ``DENSE`` (frame-dependent but held densely, e.g. after global
pooling) or ``DELTA`` (a ``Delta``/``Sparse`` on delta frames, the dense value
on the first frame). Stateful nodes are named when first met; the init and the
step pass meet them in the same order, so their states line up by name.
"""

from __future__ import annotations

import jax
import numpy as np

from deltajax import ops
from deltajax._native import default_platform
from deltajax.ops import SparsifyConfig
from deltajax.stats import layer_stats
from deltajax.transform import _refresh, _rules
from deltajax.transform._analysis import Analysis, analyse
from deltajax.transform._jaxpr import Const, Program, Var, flatten
from deltajax.transform._values import active_fraction, flat_delta, to_delta
from deltajax.transform.config import DeltaConfig

CONST, DENSE, DELTA = "const", "dense", "delta"
INPUT = "input"


class StateMismatch(ValueError):
    """The state given to a step does not belong to this program."""


class Run:
    """One pass over the program, in ``init`` (dense) or ``step`` (delta) mode.

    Attributes:
      states: name -> state pytree produced by this pass.
      stats: name -> LayerStats of this pass.
      static_stats: name -> (dense multiply-adds, fallback) as Python values, known at trace time.
      kinds: name -> node kind ('act', 'sparsify', 'conv', 'fallback:sort', ...).
      scaled: Var -> (Delta, [C] factor) when the Var's delta is that Delta times a per-channel factor
        (a batch-norm scale), so that an activation reading it can take the factor fused.
      convs: Var -> how a native delta conv made that Var's Delta (``_rules.ConvCall``), so that an
        activation reading nothing else can redo it fused (``ops.conv_activation``).
      native_convs: the Vars made by native delta convs (recorded in both passes, unlike ``convs``).
      holders: Var -> ``(bands, start, h) -> rows`` of the value its consumers have received in total, for the Vars that
        stateful nodes emit (the rolling refresh's sources: ``_refresh``).
      refresh_targets: the state arrays the rolling refresh recomputes (``_refresh.Target``).
      unrefreshed: node name -> the primitive without a band rule that keeps the rolling refresh from it.
    """

    def __init__(
        self,
        program: Program,
        analysis: Analysis,
        config: DeltaConfig,
        states_in: dict | None,
        input_delta=None,
        refresh=None,
        known: dict | None = None,
    ):
        """``input_delta``: the frame's sparsify already run, ``(Delta, SparsifyState)`` (step mode only);
        ``refresh``: ``(phase, period)``, the band of ``period`` the rolling refresh recomputes (phase: an int32
        scalar in ``[0, period)``; step mode only; None: no refresh); ``known``: the frame-independent values
        already computed (``frame_independent``), taken instead of computing them again."""
        self.program, self.analysis, self.config = program, analysis, config
        self.input_delta, self.refresh, self.known = input_delta, refresh, known or {}
        self.init = states_in is None
        self.states_in = states_in
        self.env: dict = {}
        self.kind: dict = {}
        self.states: dict = {}
        self.stats: dict = {}
        self.static_stats: dict = {}
        self.kinds: dict = {}
        self.scaled: dict = {}
        self.convs: dict = {}
        self.native_convs: set = set()
        self.holders: dict = {}
        self.refresh_targets: list = []
        self.unrefreshed: dict = {}
        self._dense_memo: dict = {}
        self._delta_memo: dict = {}
        self._tail_shape: tuple[int, int] | None = None  # the largest H, W of a map in the dense tail

    # -- values -------------------------------------------------------------------------------------------------
    def read(self, v):
        return v.value if isinstance(v, Const) else self.env[v]

    def kind_of(self, v) -> str:
        return CONST if isinstance(v, Const) else self.kind[v]

    def set(self, var: Var, value, kind: str) -> None:
        self.env[var], self.kind[var] = value, kind

    def scope_of(self, var: Var) -> str:
        eqn = self.analysis.producer.get(var)
        return eqn.scope if eqn is not None else ""

    # -- nodes --------------------------------------------------------------------------------------------------
    def node(self, scope: str, label: str, kind: str | None = None) -> str:
        """A fresh, stable name: '<flax path>/<label>' (or '<label>_<i>' without a path)."""
        base = f"{scope}/{label}" if scope else label
        name, i = (base, 0) if scope else (f"{label}_0", 0)
        while name in self.kinds:
            i += 1
            name = f"{base}_{i}" if scope else f"{label}_{i}"
        self.kinds[name] = kind or label
        return name

    def state(self, name: str):
        if name not in self.states_in:
            raise StateMismatch(name)
        return self.states_in[name]

    def record(self, name: str, out, dense_macs: float = 0.0, per_active: float | None = None, fallback=False):
        """Stats of a node: active fraction of ``out`` and multiply-adds (``per_active`` per active pixel)."""
        self.static_stats[name] = (float(dense_macs), bool(fallback))
        if self.init or fallback or out is None:
            self.stats[name] = layer_stats(1.0, dense_macs, dense_macs, fallback, keyframe=self.init)
            return
        frac = active_fraction(out)
        macs = dense_macs * frac if per_active is None else per_active * to_delta(out).mask.sum(dtype=np.float32)
        self.stats[name] = layer_stats(frac, macs, dense_macs, fallback)

    def hold(self, var: Var, name: str, held) -> None:
        """``var`` is emitted by node ``name``: ``held(state, bands, start, h)`` gives rows of its total so far
        (``_refresh.held``)."""
        self.holders[var] = lambda bands, start, h: held(self.states[name], bands, start, h)

    def refreshes(self, name: str, field: str, source, extent: str = "rows") -> None:
        """Node ``name``'s state ``field`` is the value of ``source`` (a Var, or an Eqn computing it): the rolling
        refresh recomputes it (``_refresh.Target``)."""
        self.refresh_targets.append(_refresh.Target(name, field, source, extent))

    # -- conversions between kinds -------------------------------------------------------------------------------
    def need_dense(self, var):
        """The dense value of any operand; a DELTA var goes through a densify node (once)."""
        if self.kind_of(var) != DELTA:
            return self.read(var)
        if var in self._dense_memo:
            return self._dense_memo[var]
        name = self.node(self.scope_of(var), "densify")
        value = self.env[var]
        if self.init:
            _, self.states[name] = ops.densify_init(value.reshape(_image_shape(value.shape)))
            dense = value
        else:
            d = to_delta(value) if len(var.shape) == 4 else flat_delta(value)
            out, self.states[name] = ops.densify(self.state(name), d)
            dense = out.reshape(var.shape)
        if len(var.shape) == 4:
            self.refreshes(name, "out", var)
        self._dense_memo[var] = dense
        return dense

    def can_delta(self, var) -> bool:
        """True if a frame-dependent operand can enter a delta rule (DENSE ones through a sparsify)."""
        k = self.kind_of(var)
        return k == DELTA or (k == DENSE and len(var.shape) == 4 and _rules.is_float(var.dtype))

    def need_delta(self, var):
        """A DELTA operand's value; a DENSE rank-4 one goes through an exact sparsify node (once)."""
        if self.kind_of(var) == DELTA:
            return self.env[var]
        if var in self._delta_memo:
            return self._delta_memo[var]
        name = self.node(self.scope_of(var), "sparsify")
        value = self.env[var]
        if self.init:
            out, self.states[name] = ops.sparsify_init(value)
        else:
            cfg = self.config.sparsify_for(name, SparsifyConfig())
            out, self.states[name] = ops.sparsify(self.state(name), value, cfg)
        self.hold(var, name, _refresh.held("ref"))  # what was sent, not the value now: a threshold holds some back
        self.record(name, out)
        self._delta_memo[var] = out
        return out

    def in_dense_tail(self, eqn) -> bool:
        """True where ``DeltaConfig.dense_from_stride`` runs ``eqn`` densely: every frame-dependent delta image it
        reads is that many times smaller than the frame, or smaller (and it reads one)."""
        if self._tail_shape is None:
            return False
        images = [v for v in eqn.inputs if self.kind_of(v) == DELTA and len(v.shape) == 4]
        h, w = self._tail_shape
        return bool(images) and all(v.shape[1] <= h and v.shape[2] <= w for v in images)

    # -- the pass -----------------------------------------------------------------------------------------------
    def run(self, args: list, frame_index: int) -> list:
        for i, (var, value) in enumerate(zip(self.program.inputs, args, strict=True)):
            self.set(var, value, CONST)
            if i == frame_index:
                self._input(var, value)
        for eqn in self.program.eqns:
            if eqn.outputs and eqn.outputs[0] in self.known:
                for var in eqn.outputs:
                    self.set(var, self.known[var], CONST)
                continue
            _rules.apply(self, eqn)
        outs = [self.need_dense(v) if self.kind_of(v) == DELTA else self.read(v) for v in self.program.outputs]
        if self.refresh is not None:
            _refresh.refresh(self, *self.refresh)
        return outs

    def _input(self, var: Var, frame) -> None:
        self.kinds[INPUT] = "sparsify"
        stride = self.config.dense_from_stride_on(default_platform())  # a stepper not resolved by on_platform
        if stride is not None:
            self._tail_shape = (-(-frame.shape[1] // stride), -(-frame.shape[2] // stride))
        if self.init:
            out, self.states[INPUT] = ops.sparsify_init(frame)
        elif self.input_delta is not None:
            out, self.states[INPUT] = self.input_delta
        else:
            out, self.states[INPUT] = ops.sparsify(self.state(INPUT), frame, input_config(self.config))
        self.hold(var, INPUT, _refresh.held("ref"))
        self.record(INPUT, out)
        self.set(var, out, DELTA)


def frame_independent(program: Program, args: list, frame_index: int) -> dict:
    """``{Var: value}`` of the program's equations that compute on the parameters alone (batch-norm scales, dtype
    conversions), from ``args`` (the flattened arguments; ``frame_index`` the frame's leaf): part of what a
    ``Run`` computes as CONST. ``step_frames`` computes them once, before its frame loop, and hands them to each
    step's delta and keyframe passes (``Run(known=...)``): inside those passes' loops XLA's loop-invariant code
    motion is off (``_frames.run_if``) and they ran at every delta step. A single streamed step leaves them to
    its passes (``Stepper._step``). Left to the ``Run``, as before: equations that
    read no argument (an iota, a broadcast literal) or make a value larger than their operands (a broadcast),
    which XLA fuses into their consumers where a value handed into a loop would be written out whole."""
    env = {var: value for i, (var, value) in enumerate(zip(program.inputs, args, strict=True)) if i != frame_index}
    known = {}
    for eqn in program.eqns:
        read = [v for v in eqn.inputs if isinstance(v, Var)]
        if read and all(v in env for v in read) and _not_inflating(eqn):
            values = _rules.bind(eqn, [v.value if isinstance(v, Const) else env[v] for v in eqn.inputs])
            for var, value in zip(eqn.outputs, values, strict=True):
                env[var] = known[var] = value
    return known


def _not_inflating(eqn) -> bool:
    """No output of ``eqn`` has more elements than its largest operand."""
    largest = max(int(np.prod(v.shape if isinstance(v, Var) else np.shape(v.value))) for v in eqn.inputs)
    return all(int(np.prod(v.shape)) <= largest for v in eqn.outputs)


def input_config(config: DeltaConfig) -> SparsifyConfig:
    """The sparsify settings of the model's input (the frame)."""
    return config.sparsify_for(INPUT, SparsifyConfig(config.threshold, config.dilation))


def _image_shape(shape) -> tuple[int, ...]:
    return tuple(shape) if len(shape) == 4 else (1, 1, int(np.prod(shape, dtype=np.int64)), 1)


def trace(fn, args: tuple, frame_index: int) -> tuple[Program, Analysis, jax.tree_util.PyTreeDef]:
    """Traces ``fn(*args)`` to a flat program; ``frame_index`` is the frame's leaf among the flattened args."""
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    program = flatten(closed)
    return program, analyse(program, frame_index), jax.tree_util.tree_structure(out_shape)
