"""Static analysis of a flat program: frame dependence and element-wise groups.

An element-wise group is the set of element-wise equations whose frame-dependent
operands all derive, through element-wise equations only, from one value (the
group's root): ``relu6(conv(x) * scale + offset)`` or ``y * sigmoid(y)``. A
group is applied with the activation rule once per value that leaves it, so a
non-linearity written as a chain of primitives keeps one state and one
truncation test. Values of a group that are affine in the root need no state.
"""

from __future__ import annotations

import dataclasses

from deltajax.transform._jaxpr import Const, Eqn, Program, Var

UNARY = frozenset(
    [
        "neg",
        "sign",
        "floor",
        "ceil",
        "round",
        "is_finite",
        "exp",
        "exp2",
        "log",
        "log1p",
        "expm1",
        "tanh",
        "logistic",
        "sin",
        "cos",
        "tan",
        "asin",
        "acos",
        "atan",
        "sinh",
        "cosh",
        "asinh",
        "acosh",
        "atanh",
        "erf",
        "erfc",
        "erf_inv",
        "lgamma",
        "digamma",
        "abs",
        "sqrt",
        "rsqrt",
        "cbrt",
        "square",
        "integer_pow",
        "not",
        "convert_element_type",
        "copy",
        "copy_p",
        "reduce_precision",
    ]
)
BINARY = frozenset(
    [
        "add",
        "sub",
        "mul",
        "div",
        "rem",
        "pow",
        "max",
        "min",
        "atan2",
        "nextafter",
        "and",
        "or",
        "xor",
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "add_any",
    ]
)
ELEMENTWISE = UNARY | BINARY | {"select_n", "clamp"}

_STRUCTURAL = frozenset(
    [
        "transpose",
        "reshape",
        "broadcast_in_dim",
        "squeeze",
        "expand_dims",
        "rev",
        "slice",
        "reduce_sum",
        "reduce_window_sum",
        "copy",
        "copy_p",
    ]
)


def _float(dtype) -> bool:
    return dtype.kind == "f" or dtype.name == "bfloat16"


def linear_roles(eqn: Eqn, frame: tuple[bool, ...]) -> tuple[str, ...] | None:
    """How each operand enters ``eqn`` if it is linear in its frame-dependent operands, else None.

    Roles: 'frame' (the delta goes in), and for frame-independent operands
    'keep' (index or predicate, used as is), 'nonzero' (a factor: its zeros
    stop activity), 'zero' (an additive term: zero on delta frames), 'one'
    (a divisor).
    """
    name, n = eqn.name, len(frame)
    if not all(_float(v.dtype) for v, f in zip(eqn.inputs, frame, strict=True) if f):
        return None
    if not all(_float(v.dtype) for v in eqn.outputs):
        return None

    def roles(const_role: str, frame_ok=lambda i: True) -> tuple[str, ...] | None:
        if not all(frame_ok(i) for i in range(n) if frame[i]):
            return None
        return tuple("frame" if f else const_role for f in frame)

    if name in ("add", "sub", "add_any", "concatenate"):
        return roles("zero")
    if name in ("mul", "dot_general", "conv_general_dilated"):
        return roles("nonzero") if sum(frame) == 1 else None
    if name == "div":
        return roles("one", lambda i: i == 0)
    if name in ("neg", "convert_element_type", "reduce_precision") or (name in _STRUCTURAL and n == 1):
        return roles("keep")
    if name == "pad":
        return roles("zero", lambda i: i == 0)
    if name in ("gather", "dynamic_slice"):
        return roles("keep", lambda i: i == 0)
    if name == "select_n":
        r = roles("zero", lambda i: i > 0)
        return None if r is None else ("keep", *r[1:])
    if name == "dynamic_update_slice":
        r = roles("zero", lambda i: i < 2)
        return None if r is None else (*r[:2], *("keep",) * (n - 2))
    return None


@dataclasses.dataclass
class Analysis:
    """What the interpreter needs to know before it runs.

    Attributes:
      group_root: element-wise Eqn -> the root Var of its group.
      affine: group Vars affine in their root (evaluated with the linear rule).
      escapes: group Vars read outside their group or returned.
      producer: Var -> the Eqn that makes it.
      private_roots: group root -> its group's one escaping value, for roots read only by their group's
        equations (conv -> batch norm -> relu6, say: the conv output is needed by nothing but that activation).
    """

    group_root: dict
    affine: set
    escapes: set
    producer: dict
    private_roots: dict


def _elementwise(eqn: Eqn, frame: tuple[bool, ...]) -> bool:
    if eqn.name not in ELEMENTWISE or len(eqn.outputs) != 1:
        return False
    shape = eqn.outputs[0].shape
    return all(v.shape == shape for v, f in zip(eqn.inputs, frame, strict=True) if f)


def analyse(program: Program, frame_index: int) -> Analysis:
    """Frame dependence, element-wise groups and their escaping values."""
    dep = {program.inputs[frame_index]}
    root: dict = {program.inputs[frame_index]: program.inputs[frame_index]}
    group_root: dict = {}
    affine: set = set()
    producer: dict = {}
    for eqn in program.eqns:
        for v in eqn.outputs:
            producer[v] = eqn
        frame = tuple(isinstance(v, Var) and v in dep for v in eqn.inputs)
        if not any(frame):
            continue
        dep.update(eqn.outputs)
        roots = {root[v] for v, f in zip(eqn.inputs, frame, strict=True) if f}
        out = eqn.outputs[0]
        if len(roots) == 1 and _elementwise(eqn, frame):
            (r,) = roots
            group_root[eqn] = r
            root[out] = r
            operands_affine = all(v is r or v in affine for v, f in zip(eqn.inputs, frame, strict=True) if f)
            if operands_affine and linear_roles(eqn, frame) is not None:
                affine.add(out)
        else:
            for v in eqn.outputs:
                root[v] = v
    escapes = {v for v in program.outputs if isinstance(v, Var) and v in dep}
    shared_roots = set(escapes)  # a root returned, or read by an equation outside its group
    for eqn in program.eqns:
        r = group_root.get(eqn)
        for v in eqn.inputs:
            if isinstance(v, Const) or v not in dep:
                continue
            if root[v] is v:
                if r is not v:
                    shared_roots.add(v)
            elif r is None or root[v] is not r:
                escapes.add(v)
    escaping_per_root: dict = {}
    for v in escapes:
        if root.get(v) is not None and root[v] is not v:
            escaping_per_root.setdefault(root[v], []).append(v)
    private_roots = {r: vs[0] for r, vs in escaping_per_root.items() if len(vs) == 1 and r not in shared_roots}
    return Analysis(group_root, affine, escapes, producer, private_roots)
