"""Flattening a traced function into one list of equations, call primitives inlined.

Element-wise groups (an activation written as ``x * sigmoid(x)``, a GELU, a
relu6 inside ``custom_jvp``) often span call boundaries, so the interpreter
works on a flat program: every call-like primitive (``jit``, ``custom_jvp_call``,
``custom_vjp_call``, ``closed_call``, ``remat``) is replaced by its body.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.extend.core as jcore
import numpy as np

CALL_PRIMITIVES = frozenset(
    {"jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call", "remat", "checkpoint"}
)
_BODY_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")


@dataclasses.dataclass(frozen=True, eq=False)
class Eqn:
    """One primitive application of the flat program.

    Attributes:
      primitive: the JAX primitive.
      inputs: ``Var`` or ``Const`` per operand.
      outputs: ``Var`` per result.
      params: the primitive's parameters, as ``bind`` takes them.
      scope: '/'-joined name stack (Flax module path and named calls), may be ''.
    """

    primitive: Any
    inputs: tuple
    outputs: tuple
    params: dict
    scope: str

    @property
    def name(self) -> str:
        return self.primitive.name


@dataclasses.dataclass(frozen=True, eq=False)
class Var:
    """A value of the flat program: its abstract shape and dtype."""

    shape: tuple[int, ...]
    dtype: np.dtype


@dataclasses.dataclass(frozen=True, eq=False)
class Const:
    """A literal or a closed-over constant of the traced function."""

    value: Any


@dataclasses.dataclass(frozen=True)
class Program:
    """``inputs`` (one Var per flattened argument leaf), ``eqns``, ``outputs`` (Var or Const)."""

    inputs: tuple[Var, ...]
    eqns: tuple[Eqn, ...]
    outputs: tuple


def _join(*parts: str) -> str:
    out: list[str] = []
    for part in parts:
        for piece in part.split("/"):
            if piece and (not out or out[-1] != piece):
                out.append(piece)
    return "/".join(out)


def _body(eqn) -> jcore.ClosedJaxpr | None:
    if eqn.primitive.name not in CALL_PRIMITIVES:
        return None
    for key in _BODY_PARAMS:
        body = eqn.params.get(key)
        if isinstance(body, jcore.ClosedJaxpr):
            return body
        if isinstance(body, jcore.Jaxpr):
            return jcore.ClosedJaxpr(body, ())
    return None


def _call_name(eqn) -> str:
    name = eqn.params.get("name")
    return name if isinstance(name, str) and name.isidentifier() and not name.startswith("_") else ""


class _Flattener:
    def __init__(self):
        self.eqns: list[Eqn] = []

    def new_var(self, aval) -> Var:
        return Var(tuple(aval.shape), np.dtype(aval.dtype))

    def run(self, closed: jcore.ClosedJaxpr, args: list, scope: str) -> list:
        env: dict = {}
        for v, c in zip(closed.jaxpr.constvars, closed.consts, strict=True):
            env[v] = Const(c)
        for v, a in zip(closed.jaxpr.invars, args, strict=True):
            env[v] = a

        def read(v):
            return Const(v.val) if isinstance(v, jcore.Literal) else env[v]

        for eqn in closed.jaxpr.eqns:
            ins = [read(v) for v in eqn.invars]
            inner_scope = _join(scope, str(eqn.source_info.name_stack))
            body = _body(eqn)
            if body is not None:
                outs = self.run(body, ins, _join(inner_scope, _call_name(eqn)))
            else:
                outs = [self.new_var(v.aval) for v in eqn.outvars]
                self.eqns.append(Eqn(eqn.primitive, tuple(ins), tuple(outs), dict(eqn.params), inner_scope))
            for v, o in zip(eqn.outvars, outs, strict=True):
                env[v] = o
        return [read(v) for v in closed.jaxpr.outvars]


def flatten(closed: jcore.ClosedJaxpr) -> Program:
    """Inlines every call primitive of ``closed`` into one flat Program."""
    flat = _Flattener()
    inputs = [flat.new_var(v.aval) for v in closed.jaxpr.invars]
    outputs = flat.run(closed, inputs, "")
    return Program(tuple(inputs), tuple(flat.eqns), tuple(outputs))
