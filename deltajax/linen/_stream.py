"""Starting a stream and threading per-layer state through the 'delta_state' collection.

A stream starts (first frame, scene cut, resolution change) with ONE call,
``out, variables = deltajax.linen.start(model, variables, frame)``: it runs
the frame densely with the marker collection 'delta_start' mutable, and every
stateful layer creates its state. Later frames are plain
``model.apply(variables, frame, mutable=['delta_state'])``. A stateful layer
that finds no state on a delta frame, or a dense frame outside ``start``,
raises an error naming the call to make.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn

from deltajax.ops import Delta

COLLECTION = "delta_state"
START = "delta_start"

HOW = (
    "start the stream with `out, variables = deltajax.linen.start(model, variables, frame)`, then run each "
    "later frame with `out, upd = model.apply(variables, frame, mutable=['delta_state'])`"
)


def start(model: nn.Module, variables: Mapping[str, Any], *args, **kwargs) -> tuple[Any, dict]:
    """Starts or restarts a stream: runs ``model`` densely on the first frame and creates every layer's state.

    Args:
      model: a Linen module built from deltajax.linen layers (or a ``DeltaWrapper``).
      variables: its variables (``params``, ``batch_stats``; an old
        ``delta_state`` is dropped).
      *args, **kwargs: the model's call arguments (the frame ``[N, H, W, C]`` first).

    Returns:
      ``(output, variables)`` with a fresh ``'delta_state'`` collection.

    Example:
      >>> y, variables = deltajax.linen.start(model, variables, frames[0])
      >>> y, upd = model.apply(variables, frames[1], mutable=['delta_state'])
      >>> variables = {**variables, **upd}
    """
    kept = {k: v for k, v in variables.items() if k != COLLECTION}
    out, updates = model.apply(kept, *args, mutable=[COLLECTION, START], **kwargs)
    return out, {**kept, COLLECTION: updates.get(COLLECTION, {})}


def is_starting(module: nn.Module) -> bool:
    """True inside ``deltajax.linen.start`` (or ``model.init``), never in ``apply(..., mutable=True)``."""
    if module.is_initializing():
        return True
    return module.is_mutable_collection(START) and not module.is_mutable_collection("params")


def _who(module: nn.Module) -> str:
    return type(module).__name__ + (f" {module.name!r}" if module.name else "")


def _missing(module: nn.Module) -> ValueError:
    return ValueError(
        f"{_who(module)}: the '{COLLECTION}' collection holds no state for this layer "
        f"(a delta frame needs the state of the stream's first frame); {HOW}"
    )


def stateful(module: nn.Module, x, init: Callable, step: Callable):
    """Runs ``init(x) -> (out, state)`` on a dense first frame or ``step(state, x)`` on a Delta, keeping the state."""
    if not isinstance(x, Delta):
        return _start_layer(module, lambda: init(x))
    return step_layer(module, lambda state: step(state, x))


def _start_layer(module: nn.Module, init: Callable):
    if not is_starting(module):
        raise ValueError(
            f"{_who(module)}: got a dense input outside deltajax.linen.start; a dense frame starts a stream; {HOW}"
        )
    out, state = init()
    module.put_variable(COLLECTION, "state", state)
    return out


def step_layer(module: nn.Module, step: Callable):
    """Runs ``step(state) -> (out, state)`` on the layer's stored state."""
    if not module.has_variable(COLLECTION, "state"):
        raise _missing(module)
    if not module.is_mutable_collection(COLLECTION):
        raise ValueError(
            f"{_who(module)}: the '{COLLECTION}' collection is immutable; pass "
            f"mutable=['{COLLECTION}'] to model.apply so the layer can keep its state"
        )
    out, state = step(module.get_variable(COLLECTION, "state"))
    module.put_variable(COLLECTION, "state", state)
    return out


def start_or_step(module: nn.Module, init: Callable, step: Callable):
    """For layers whose input is always dense (Sparsify, the wrapper): ``init()`` in ``start``, else ``step(state)``."""
    return _start_layer(module, init) if is_starting(module) else step_layer(module, step)
