"""Threshold tuning: per-layer thresholds, front to back, within an accuracy budget.

Each configurable layer (the input's sparsify and every activation) gets the
largest candidate threshold that keeps the model's outputs on a short clip
within the budget against dense, taken front to back (earlier layers first,
each decision kept for the later ones). A greedy pass lets the first group
spend the budget that later ones would have used better: the input, whose
threshold reaches every layer, can take it all (OpenPose at 432x768 on the
person clip: 2 input levels and no layer threshold, 0.845 of dense's
multiply-adds, against 0 and 0.01, 0.784). So the pass runs twice, the input
first and the input last, and the configuration with fewer multiply-adds is
kept. Thresholds are saved and loaded as JSON keyed by the stable layer names
of ``Stepper.layers``.

Every trial runs one compiled program: the thresholds enter it as traced
values (their layers then run the pure-JAX reference of the activation and
sparsify rules, the convolutions stay native), so a trial costs a run of the
clip, not a compilation.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from importlib import resources

import jax
import jax.numpy as jnp
import numpy as np

from deltajax import stats as stats_lib
from deltajax.ops.config import SparsifyConfig, Truncation, as_threshold
from deltajax.transform import DeltaConfig, delta
from deltajax.transform._interpret import input_config
from deltajax.video import _clip_loop

DEFAULT_CANDIDATES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.4)
INPUT_FIRST, INPUT_LAST = "input first", "input last"  # the orders of the two greedy passes


@dataclasses.dataclass(frozen=True)
class Budget:
    """What the delta model must keep against dense on the tuning clip.

    Attributes:
      min_top1_agreement: the smallest agreement the metric may give (e.g. 0.99), or None: for classifiers the
        fraction of frames x streams whose arg-max agrees, for pose the keypoint agreement (``METRICS``).
      max_logit_error: largest relative error ``||delta - dense|| / ||dense||`` of the output, or None.
    """

    min_top1_agreement: float | None = 0.99
    max_logit_error: float | None = None

    def __post_init__(self):
        if self.min_top1_agreement is None and self.max_logit_error is None:
            raise ValueError("Budget: give min_top1_agreement, max_logit_error or both, got neither")

    def holds(self, agreement: float, error: float) -> bool:
        return (self.min_top1_agreement is None or agreement >= self.min_top1_agreement) and (
            self.max_logit_error is None or error <= self.max_logit_error
        )


@dataclasses.dataclass(frozen=True)
class Trial:
    """One evaluated configuration: which group got which threshold, and what it gave."""

    group: str
    threshold: float
    accepted: bool
    mac_ratio: float
    top1_agreement: float | None  # the metric's agreement (top-1, keypoints), None for images
    logit_error: float
    order: str = INPUT_FIRST  # the pass it belongs to: INPUT_FIRST or INPUT_LAST


@dataclasses.dataclass(frozen=True)
class TuneResult:
    """The tuned configuration, every trial, the programs compiled for the trials and the seconds it all took;
    ``order``: the pass whose configuration was kept."""

    config: DeltaConfig
    trials: tuple[Trial, ...]
    compiles: int
    seconds: float
    order: str = INPUT_FIRST

    def table(self) -> str:
        lines = [
            f"{'pass':<11} {'group':<40} {'threshold':>9} {'MACs/dense':>10} {'agreement':>10} {'rel. error':>10}  kept"
        ]
        for t in self.trials:
            agreement = "-" if t.top1_agreement is None else f"{t.top1_agreement:.3f}"
            lines.append(
                f"{t.order:<11} {t.group:<40} {t.threshold:9.3g} {t.mac_ratio:10.3f} {agreement:>10} "
                f"{t.logit_error:10.2e}  {'yes' if t.accepted else 'no'}"
            )
        lines.append(
            f"{len(self.trials)} trials, {self.compiles} compiled program(s), {self.seconds:.1f} s; "
            f"kept the {self.order} pass"
        )
        return "\n".join(lines)


def classes_metric(outs, dense) -> tuple[float, float]:
    """Class scores ``[T, N, K]``: top-1 agreement and the largest relative error, against dense."""
    agreement, errors = stats_lib.compare_outputs(outs, dense)
    return agreement, float(errors.max())


def keypoints_metric(outs, dense) -> tuple[float, float]:
    """Pose maps ``[T, N, H, W, 57]``: keypoint agreement (``keypoints.compare``) and the largest relative error."""
    from deltajax import keypoints

    return keypoints.compare(np.asarray(dense), np.asarray(outs))["agreement"], classes_metric(outs, dense)[1]


def image_metric(outs, dense) -> tuple[None, float]:
    """Images ``[T, N, H, W, C]``: no agreement, the largest relative error (for a clip, a PSNR floor)."""
    return None, classes_metric(outs, dense)[1]


# What each bundled model's outputs are compared by: (agreement or None, largest relative error) of outs to dense.
METRICS = {
    "efficientnet_lite0": classes_metric,
    "mobilenet_v2": classes_metric,
    "pose": keypoints_metric,
    "superres": image_metric,
}


def _frame_position(args: tuple, frame_argnum: int) -> int:
    """Where the frame goes among ``fn``'s arguments ``args`` (``frame_argnum`` may count from the end)."""
    return frame_argnum if frame_argnum >= 0 else len(args) + 1 + frame_argnum


def _dense_program(fn: Callable, pos: int):
    """``dense(clip [T, ...], args) -> [T, ...]``: ``fn`` frame by frame with the frame at ``pos``, jitted."""
    return jax.jit(jax.vmap(lambda frame, args: fn(*args[:pos], frame, *args[pos:]), in_axes=(0, None)))


def input_level(preprocess: Callable) -> jax.Array:
    """``[C]``: one 8-bit level of the raw frame in the model's input units, per channel (``preprocess`` maps uint8
    ``[N, H, W, C]`` frames to the model's input and is affine per channel, as the bundled models' are)."""
    zeros = jnp.zeros((1, 1, 1, 3), jnp.uint8)
    return jnp.abs(preprocess(zeros + 1) - preprocess(zeros)).reshape(-1)


def noise_floor_budget(
    fn: Callable,
    clip: jax.Array,
    *args,
    noise,
    draws: int = 3,
    seed: int = 0,
    frame_argnum: int = -1,
    metric: Callable = classes_metric,
) -> Budget:
    """The budget that dense itself keeps under the noise a video already carries.

    Dense runs on ``clip`` and on ``clip`` plus uniform noise in ``[-noise, noise]`` (``draws`` draws); the
    budget is the worst agreement and the largest relative output error among them (``metric``). A threshold set
    within it moves the outputs no more than a level or two of camera or compression noise moves dense's.

    Args:
      fn, clip, *args, frame_argnum: as for ``tune_thresholds``.
      noise: amplitude in input units, a number or per channel ``[C]`` (``levels * input_level(preprocess)``).
      draws: noise draws; the worst one sets the budget.
      seed: of the draws.
      metric: ``(outs, dense) -> (agreement or None, relative error)`` (``METRICS``): ``classes_metric`` (top-1),
        ``keypoints_metric`` (pose), ``image_metric`` (the relative error alone: for an image, a PSNR floor).
    """
    clip = jnp.asarray(clip)
    program = _dense_program(fn, _frame_position(args, frame_argnum))
    clean = program(clip, args)
    amplitude = jnp.broadcast_to(jnp.asarray(noise, clip.dtype), clip.shape)  # a number or per channel
    agreements, errors = [], []
    for key in jax.random.split(jax.random.key(seed), draws):
        noisy = clip + jax.random.uniform(key, clip.shape, clip.dtype, -1.0, 1.0) * amplitude
        agreement, error = metric(program(noisy, args), clean)
        agreements.append(agreement)
        errors.append(error)
    return Budget(None if None in agreements else min(agreements), max(errors))


def block_groups(name: str) -> str:
    """Groups layers by their block: ``Net/block3/expand/relu6/act`` -> ``Net/block3``."""
    match = re.match(r"(.*?/(?:block|layer|stage)\d+)/", name)
    return match.group(1) if match else name.rsplit("/", 2)[0] if "/" in name else name


def _with_layers(config: DeltaConfig, layers: dict) -> DeltaConfig:
    """``config`` with the thresholds of ``layers`` (name -> number or traced scalar) set, each layer keeping its
    truncation mode or dilation."""
    settings = dict(config.layers)
    for name, value in layers.items():
        current = settings.get(name)
        if isinstance(current, Truncation):
            value = Truncation(current.mode, value)
        elif isinstance(current, SparsifyConfig):
            value = SparsifyConfig(value, current.dilation)
        settings[name] = value
    threshold = settings.pop("input", config.threshold)
    if isinstance(threshold, SparsifyConfig):
        threshold = threshold.threshold
    return dataclasses.replace(config, threshold=as_threshold(threshold), layers=settings)


def _threshold_of(config: DeltaConfig, name: str, kind: str) -> float:
    if name == "input":
        return input_config(config).threshold
    if kind == "act":
        return config.truncation_for(name).threshold
    return config.sparsify_for(name, SparsifyConfig()).threshold


def _trial_program(fn: Callable, frame_argnum: int, base: DeltaConfig, names: Sequence[str]):
    """``(run, traces)``: ``run(thresholds [L] float32, clip, args) -> (outputs [T, ...], stats)`` with the
    thresholds of ``names`` traced, so that every trial reuses one compiled program; ``traces[0]`` counts its
    compilations. Every changed frame is a delta step (no dense frame modes): the budget is checked on what the
    thresholds do, not on frames that happen to run densely."""
    traces = [0]
    base = dataclasses.replace(base, keyframe_above=None)

    @jax.jit
    def run(thresholds, clip, args):
        traces[0] += 1
        config = _with_layers(base, dict(zip(names, thresholds, strict=True)))
        stepper = delta(fn, frame_argnum=frame_argnum, config=config)
        return _clip_loop(clip, args, None, model=stepper, keyframe_every=None, with_stats=True)

    return run, traces


def tune_thresholds(
    fn: Callable,
    clip: jax.Array,
    *args,
    budget: Budget = Budget(),
    candidates: Sequence[float] = DEFAULT_CANDIDATES,
    group: Callable[[str], str] = block_groups,
    base: DeltaConfig = DeltaConfig(),
    frame_argnum: int = -1,
    verbose: bool = False,
    metric: Callable = classes_metric,
    input_candidates: Sequence[float] | None = None,
) -> TuneResult:
    """Finds per-layer thresholds front to back within ``budget``, in two passes (the input first, then last).

    Args:
      fn: the model function (e.g. ``module.apply``), as for ``deltajax.delta``.
      clip: ``[T, N, H, W, C]`` frames to tune on (a short clip of the target video).
      *args: ``fn``'s other arguments (params), as for ``deltajax.video.run_clip``.
      budget: what must hold against dense on ``clip``.
      candidates: thresholds tried for each group: the largest first, kept if it
        holds; otherwise ascending, keeping the largest that holds (stopping at
        the first that fails).
      group: maps a layer name to the group tuned together (default: per
        block, which keeps the number of trials small); ``lambda n: n`` tunes
        every layer on its own.
      base: the starting configuration (kept where no candidate holds).
      metric: how outputs compare with dense, as for ``noise_floor_budget`` (default: class scores).
      input_candidates: thresholds tried for the frame's input (the group holding the ``"input"`` sparsify
        alone), in the model's input units, which are not the activations' (e.g. ``levels * input_level``);
        default: ``candidates``.

    Returns:
      A ``TuneResult``: the tuned ``DeltaConfig`` of the pass with fewer multiply-adds (the input first on a
      tie, or when the input is the only group), every trial of both passes (for the trade-off curve), the
      programs compiled for the trials (1), the seconds taken and the pass kept.
    """
    start = time.perf_counter()
    clip = jnp.asarray(clip)
    pos = _frame_position(args, frame_argnum)
    call = (*args[:pos], clip[0], *args[pos:])
    kinds = delta(fn, frame_argnum=frame_argnum, config=base).layers(*call)
    names = [n for n, kind in kinds.items() if kind in ("act", "sparsify")]
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(group(name), []).append(name)

    dense = _dense_program(fn, pos)(clip, args)
    run, traces = _trial_program(fn, frame_argnum, base, names)

    runs: dict[tuple[float, ...], tuple] = {}  # the second pass repeats some of the first's configurations

    def evaluate(config):
        key = tuple(_threshold_of(config, n, kinds[n]) for n in names)
        if key not in runs:
            outs, stats = run(jnp.asarray(key, jnp.float32), clip, args)
            runs[key] = (*metric(outs, dense), stats_lib.mac_ratio(stats))
        return runs[key]

    trials: list[Trial] = []

    def greedy(order: str, keys: Sequence[str]) -> tuple[DeltaConfig, float]:
        """One front-to-back pass over the groups ``keys``: its configuration and multiply-adds (inf: the base,
        nothing kept)."""
        config, macs = base, float("inf")

        def attempt(key, members, threshold) -> bool:
            nonlocal config, macs
            trial_config = _with_layers(config, {m: float(threshold) for m in members})
            agreement, error, trial_macs = evaluate(trial_config)
            ok = budget.holds(agreement, error)
            trials.append(Trial(key, float(threshold), ok, trial_macs, agreement, error, order))
            if verbose:
                print(trials[-1], flush=True)
            if ok:
                config, macs = trial_config, trial_macs
            return ok

        for key in keys:
            members = groups[key]
            ordered = sorted(input_candidates if members == ["input"] and input_candidates is not None else candidates)
            # The largest candidate first: when it holds (common for late layers) one evaluation settles the group.
            if len(ordered) > 1 and attempt(key, members, ordered[-1]):
                continue
            for threshold in ordered[:-1] if len(ordered) > 1 else ordered:
                if not attempt(key, members, threshold):
                    break
        return config, macs

    orders = {INPUT_FIRST: list(groups)}
    input_key = next((key for key, members in groups.items() if "input" in members), None)
    if input_key is not None and len(groups) > 1:
        orders[INPUT_LAST] = [key for key in groups if key != input_key] + [input_key]
    passes = {order: greedy(order, keys) for order, keys in orders.items()}
    order = min(passes, key=lambda o: passes[o][1])  # dicts keep insertion order: the input first on a tie
    config = passes[order][0]
    return TuneResult(config, tuple(trials), traces[0], time.perf_counter() - start, order)


def config_to_json(config: DeltaConfig) -> dict:
    """A JSON-ready dict of a DeltaConfig's thresholds (floats, Truncations and SparsifyConfigs by value), its
    ``keyframe_above`` where it is not "auto" and its ``dense_from_stride`` where it is set (a per-platform mapping
    as an object)."""

    def value(v):
        if isinstance(v, Truncation):
            return {"mode": v.mode, "threshold": v.threshold}
        if isinstance(v, SparsifyConfig):
            return {"threshold": v.threshold, "dilation": v.dilation}
        return float(v)

    data = {
        "threshold": config.threshold,
        "dilation": config.dilation,
        "truncation": value(config.truncation),
        "layers": {name: value(v) for name, v in config.layers},
    }
    above = config.keyframe_above
    if above != "auto":
        data["keyframe_above"] = dict(above) if isinstance(above, tuple) else above
    stride = config.dense_from_stride
    if stride is not None:
        data["dense_from_stride"] = dict(stride) if isinstance(stride, tuple) else stride
    return data


def config_from_json(data: dict) -> DeltaConfig:
    """Inverse of :func:`config_to_json`; unknown keys are refused."""
    known = {"threshold", "dilation", "truncation", "layers", "keyframe_above", "dense_from_stride"}
    if not isinstance(data, dict) or set(data) - known:
        raise ValueError(f"thresholds JSON: expected an object with keys {sorted(known)}, got {data!r:.200}")

    def value(v):
        if isinstance(v, dict) and "mode" in v:
            return Truncation(v["mode"], float(v["threshold"]))
        if isinstance(v, dict):
            return SparsifyConfig(float(v["threshold"]), int(v.get("dilation", 0)))
        return float(v)

    truncation = value(data.get("truncation", {"mode": "max", "threshold": 0.0}))
    return DeltaConfig(
        float(data.get("threshold", 0.0)),
        int(data.get("dilation", 0)),
        truncation,
        {name: value(v) for name, v in data.get("layers", {}).items()},
        keyframe_above=data.get("keyframe_above", "auto"),
        dense_from_stride=data.get("dense_from_stride"),
    )


def save_thresholds(path: str | os.PathLike, config: DeltaConfig) -> None:
    with open(path, "w") as f:
        json.dump(config_to_json(config), f, indent=1, sort_keys=True)


def load_thresholds(path: str | os.PathLike) -> DeltaConfig:
    with open(path) as f:
        return config_from_json(json.load(f))


def shipped_thresholds(
    model: str, size: tuple[int, int] | None = None, clip: str | os.PathLike | None = None
) -> DeltaConfig:
    """Thresholds tuned for a bundled model, else all 0 (exact).

    Looks in ``deltajax/data/`` for ``<model>_thresholds_<H>x<W>_<clip>.json``
    (tuned on that clip, named by its file name without extension, at that
    frame size), then ``<model>_thresholds_<H>x<W>.json`` (thresholds do not
    carry over between resolutions well), then ``<model>_thresholds.json``.
    """
    data = resources.files("deltajax") / "data"
    sized = f"{model}_thresholds_{size[0]}x{size[1]}" if size else None
    names = [
        *([f"{sized}_{os.path.splitext(os.path.basename(clip))[0]}.json"] if sized and clip else []),
        *([f"{sized}.json"] if sized else []),
        f"{model}_thresholds.json",
    ]
    for name in names:
        if (data / name).is_file():
            return load_thresholds(str(data / name))
    return DeltaConfig()


def plot_tradeoff(path: str | os.PathLike, result: TuneResult) -> None:
    """PNG: multiply-adds vs logit error of every accepted trial, front to back, a line per pass."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for order in dict.fromkeys(t.order for t in result.trials):
        kept = [t for t in result.trials if t.accepted and t.order == order]
        label = f"{order} (kept)" if order == result.order else order
        ax.plot([t.mac_ratio for t in kept], [t.logit_error for t in kept], "o-", label=label)
    ax.legend(fontsize=8)
    ax.set_xlabel("multiply-adds done / dense")
    ax.set_ylabel("max relative logit error")
    ax.set_title("threshold tuning, front to back")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
