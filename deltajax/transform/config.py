"""Thresholds of a transformed model: defaults plus per-layer values, frozen and hashable."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Literal

from deltajax.ops.config import SparsifyConfig, Truncation, as_threshold, is_traced

LayerSetting = Truncation | SparsifyConfig | float
KeyframeAbove = float | Literal["auto"] | None | tuple[tuple[str, float | None], ...] | Mapping[str, float | None]
DenseFromStride = int | None | tuple[tuple[str, int | None], ...] | Mapping[str, int | None]
# lax.platform_dependent's names: the platforms a per-platform keyframe_above may name
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


@dataclasses.dataclass(frozen=True)
class DeltaConfig:
    """Thresholds of a ``deltajax.delta`` stepper (hashable: usable as a static jit argument).

    Attributes:
      threshold: input threshold of the frame's sparsify (``max_c |x - ref|``).
      dilation: grow the input activity map by this many pixels.
      truncation: default truncation of every activation layer.
      layers: per-layer overrides by name (see ``Stepper.layers``): a
        ``Truncation`` for an ``.../act`` layer, a ``SparsifyConfig`` for
        ``input`` or a ``.../sparsify`` layer, or a float (the threshold, with
        the default mode). A mapping is accepted and stored as sorted pairs.
        Thresholds may be traced scalars inside a jitted function (a config
        built there is then not hashable; ``deltajax.tune`` does this so that
        its trials share one compiled program).
      keyframe_above: a frame whose fraction of active 16x16 input tiles (a
        tile is active when any of its pixels is; over all streams) exceeds
        this runs densely and restarts the state, since a delta step would cost
        more than a dense frame there. ``"auto"``: the crossover
        measured for the platform (``deltajax.transform._frames.AUTO_CROSSOVER``);
        None: only non-finite frames (and the frame after one) run densely;
        a mapping ``{platform: fraction or None}`` (platforms 'cpu', 'cuda',
        'rocm', 'tpu'; stored as sorted pairs): those values on the platforms
        it names, "auto" on the others: a model's own crossover where it
        differs from the platform's (``deltajax tune``'s shipped configs carry
        it, e.g. super-resolution's {"cpu": 0.6}).
        Frames with no active input pixel are skipped in every setting.
      refresh_every: after this many delta steps since the layers' state was
        last built, the next changed frame runs as a keyframe (dense, state
        rebuilt). Each delta step adds its rounding to the accumulated state,
        float32 included, so without it the error against dense random-walks
        upwards over thousands of frames. None: never.
      rolling_refresh: each delta step recomputes a band of ``ceil(H / P)``
        rows of every stateful layer's accumulated input (``H`` rows) from
        what its producers hold, so every row is recomputed once per this
        many (``P``) delta steps: the random walk is bounded without a dense
        frame (a video codec's intra refresh), at a cost per step of ``1 / P``
        of one or more: a band is at least one row, so a map of fewer than
        ``P`` rows recomputes ``1 / H`` of itself, and a convolution's band
        reads its halo too (EfficientNet-Lite0 at 768x432, ``P`` = 64: 4.3 %
        of a dense frame's FLOPs, against 1.6 %). Layers behind
        a primitive it has no band rule for (a bilinear resize) are left to
        ``refresh_every`` (``Stepper.unrefreshed`` names them). None: off.
      feedback: in a 16-bit (bfloat16, float16) stream, send the output of
        each layer that no activation follows (a projection conv and its batch
        norm, a residual add) through a feedback node: it accumulates the
        layer's float32 result and emits the rounded difference to what it has
        sent, so the rounding is not a random walk in its consumers' state
        (``Stepper.layers`` lists the nodes as kind "feedback"). It costs a
        float32 state of two arrays per node: EfficientNet-Lite0 in bfloat16
        at 768x432 has 25 nodes and 373 MB of state instead of 331. False:
        those outputs are rounded and sent as they are. Float32 streams are
        unaffected.
      dense_from_stride: layers that read a frame-dependent feature map of
        ``ceil(H / S) x ceil(W / S)`` pixels or fewer (``S`` this stride, ``H x W``
        the frame's) run densely at every step: the map is accumulated once (a
        float32 densify node) and every layer after it that reads only dense
        values runs as the plain model does, with no per-layer state. Deep
        layers see most of their pixels change once the receptive field has
        spread a small change (EfficientNet-Lite0 at 768x432 with 1 % of the
        pixels changed: 55-100 % active at stride 16, 87-100 % at 32), where a
        delta layer costs more than the dense one; their dense cost is small.
        Per-layer settings of layers that run densely are unused. None: every
        layer runs on deltas. A mapping ``{platform: stride or None}``
        (platforms as for ``keyframe_above``; stored as sorted pairs; None on
        the platforms it does not name) sets it per platform, since what it
        buys depends on the device (``deltajax tune --crossover --dense-tails``
        measures it): ``run_clip`` and ``streaming`` take the value of the
        platform they run on (``Stepper.on_platform``), a stepper called
        directly that of JAX's default backend.

    Example:
      >>> cfg = DeltaConfig(threshold=0.05, layers={"Net/Conv_0/act": 0.1})
    """

    threshold: float = 0.0
    dilation: int = 0
    truncation: Truncation = Truncation()
    layers: tuple[tuple[str, LayerSetting], ...] | Mapping[str, LayerSetting] = ()
    keyframe_above: KeyframeAbove = "auto"
    refresh_every: int | None = 1000
    rolling_refresh: int | None = None
    feedback: bool = True
    dense_from_stride: DenseFromStride = None

    def __post_init__(self):
        SparsifyConfig(self.threshold, self.dilation)  # validates
        object.__setattr__(self, "keyframe_above", _keyframe_above(self.keyframe_above))
        for field in ("refresh_every", "rolling_refresh"):
            if not _is_count(getattr(self, field)):
                raise ValueError(f"DeltaConfig: {field} must be a positive int or None, got {getattr(self, field)!r}")
        object.__setattr__(self, "dense_from_stride", _dense_from_stride(self.dense_from_stride))
        if not isinstance(self.feedback, bool):
            raise TypeError(f"DeltaConfig: feedback must be a bool, got {type(self.feedback).__name__}")
        if not isinstance(self.truncation, Truncation):
            raise TypeError(f"DeltaConfig: truncation must be a Truncation, got {type(self.truncation).__name__}")
        items: Iterable = self.layers.items() if isinstance(self.layers, Mapping) else self.layers
        pairs = tuple(sorted((str(k), v) for k, v in items))
        for name, value in pairs:
            if not (isinstance(value, Truncation | SparsifyConfig | int | float) or is_traced(value)):
                raise TypeError(
                    f"DeltaConfig: layer {name!r} must map to a Truncation, a SparsifyConfig or a float, "
                    f"got {type(value).__name__}"
                )
        object.__setattr__(self, "layers", pairs)

    def check_names(self, known: Mapping[str, str]) -> None:
        """Raises if a per-layer entry names no configurable layer of ``known`` (name -> kind)."""
        configurable = sorted(n for n, kind in known.items() if kind in ("act", "sparsify"))
        for name, value in self.layers:
            if name not in configurable:
                raise ValueError(
                    f"DeltaConfig: layer {name!r} is not a configurable layer of this model; "
                    f"expected one of {configurable}"
                )
            kind = known[name]
            if kind == "act" and isinstance(value, SparsifyConfig):
                raise TypeError(f"DeltaConfig: layer {name!r} is an activation, expected a Truncation or a float")
            if kind == "sparsify" and isinstance(value, Truncation):
                raise TypeError(f"DeltaConfig: layer {name!r} is a sparsify, expected a SparsifyConfig or a float")

    def dense_from_stride_on(self, platform: str) -> int | None:
        """The ``dense_from_stride`` that applies on ``platform`` ('cpu', 'cuda', ...)."""
        stride = self.dense_from_stride
        return dict(stride).get(platform) if isinstance(stride, tuple) else stride

    def truncation_for(self, name: str) -> Truncation:
        value = dict(self.layers).get(name, self.truncation)
        return value if isinstance(value, Truncation) else Truncation(self.truncation.mode, as_threshold(value))

    def sparsify_for(self, name: str, default: SparsifyConfig) -> SparsifyConfig:
        value = dict(self.layers).get(name, default)
        return value if isinstance(value, SparsifyConfig) else SparsifyConfig(as_threshold(value), default.dilation)


def _is_count(value) -> bool:
    """A positive int (not a bool) or None."""
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)


def _per_platform(setting, valid) -> tuple | None:
    """A mapping (or pairs) from platforms to values that ``valid`` accepts, as sorted pairs; None if it is not."""
    if not isinstance(setting, Mapping | tuple):
        return None
    try:
        pairs = tuple(sorted((p, v) for p, v in (setting.items() if isinstance(setting, Mapping) else setting)))
    except (TypeError, ValueError):
        return None
    ok = len(dict(pairs)) == len(pairs) and all(p in PLATFORMS and valid(v) for p, v in pairs)
    return pairs if ok else None


def _dense_from_stride(stride) -> DenseFromStride:
    """``DeltaConfig.dense_from_stride`` validated; a per-platform mapping as sorted ``(platform, stride)`` pairs."""
    if _is_count(stride):
        return stride
    pairs = _per_platform(stride, _is_count)
    if pairs is None:
        raise ValueError(
            "DeltaConfig: dense_from_stride must be a positive int, None, or a mapping from platforms "
            f"{PLATFORMS} to positive ints or None, got {stride!r}"
        )
    return pairs


def _is_fraction(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1


def _keyframe_above(above) -> KeyframeAbove:
    """``DeltaConfig.keyframe_above`` validated; a per-platform mapping as sorted ``(platform, value)`` pairs."""
    if above is None or above == "auto" or _is_fraction(above):
        return above
    pairs = _per_platform(above, lambda v: v is None or _is_fraction(v))
    if pairs is not None:
        return pairs
    raise ValueError(
        "DeltaConfig: keyframe_above must be a fraction in [0, 1], 'auto', None, or a mapping from platforms "
        f"{PLATFORMS} to fractions in [0, 1] or None, got {above!r}"
    )
