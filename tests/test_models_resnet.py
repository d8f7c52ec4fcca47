"""acl_tf.models.resnet: input normalisation, ResNet-18 / WideResNet encoders and their .keras round
trips per BN branch (and build_encoder); PyTorch's padding of the strided convolutions against a
NumPy convolution, the layout_version field and files saved before it."""

import json
import logging
import zipfile

import keras
import numpy as np
import pytest
from keras_roundtrip import assert_round_trip
from model_helpers import images, perturb_adv_statistics

from acl_tf.models import (
    LAYOUT_VERSION,
    ChannelNormalization,
    Classifier,
    ResNet18,
    WideResNet,
    build_encoder,
)
from acl_tf.models.resnet import BasicBlock, WideBasicBlock


def test_channel_normalization():
    layer = ChannelNormalization(mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    x = np.ones((1, 2, 2, 3), "float32")
    np.testing.assert_allclose(layer(x).numpy()[0, 0, 0], [1.0, 3.0, 1.0])
    with pytest.raises(ValueError, match="std > 0"):
        ChannelNormalization(std=(1.0, 0.0, 1.0))


def test_channel_normalization_roundtrip(tmp_path):
    layer = ChannelNormalization(mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    loaded = assert_round_trip(layer, images(2), tmp_path)
    assert (loaded.mean, loaded.std) == ((0.5, 0.25, 0.0), (0.5, 0.25, 1.0))


def test_resnet18_structure():
    model = build_encoder("resnet18", width=64)
    out = model(images(2))
    assert out.shape == (2, 512)
    # The paper's 11.2M: torchvision-CIFAR ResNet-18 has 11,173,962 trainable parameters with its
    # 5,130-parameter fc layer; the encoder alone (single BN) must have the rest.
    single = build_encoder("resnet18", width=64, dual_bn=False)
    single(images(1))
    assert sum(int(np.prod(w.shape)) for w in single.trainable_weights) == 11_173_962 - 5_130
    with pytest.raises(ValueError, match="Unknown architecture"):
        build_encoder("vgg")


@pytest.mark.parametrize("factory", [lambda: ResNet18(width=4),
                                     lambda: WideResNet(depth=10, widen_factor=1)])
def test_encoder_roundtrip_per_branch(factory, tmp_path):
    model = factory()
    x = images()
    model(x)
    perturb_adv_statistics(model)
    normal, adv = model(x, branch="normal").numpy(), model(x, branch="adv").numpy()
    assert np.abs(normal - adv).max() > 1e-3, "branches must differ for the test to mean anything"
    restored = assert_round_trip(model, x, tmp_path, calls=[{"branch": "normal"},
                                                            {"branch": "adv"}])
    assert restored.get_config() == model.get_config()
    np.testing.assert_allclose(restored(x, branch="normal").numpy(), normal, atol=1e-5)
    np.testing.assert_allclose(restored(x, branch="adv").numpy(), adv, atol=1e-5)


def test_wide_resnet_depth_check():
    with pytest.raises(ValueError, match="6n\\+4"):
        WideResNet(depth=33)


# -- PyTorch's arithmetic: padding ----------------------------------------------------------------
def np_conv2d(x, kernel, stride, pad):
    """Float64 cross-correlation as PyTorch's ``nn.Conv2d`` computes it, channels last: ``x``
    [N, H, W, C], ``kernel`` [kh, kw, C, F], zero padding ``pad`` = (before, after) on both spatial
    axes (PyTorch's ``padding=p`` is (p, p)); output size floor((H + before + after - kh) / s)
    + 1."""
    x = np.pad(np.asarray(x, np.float64), ((0, 0), pad, pad, (0, 0)))
    kernel = np.asarray(kernel, np.float64)
    kh, kw = kernel.shape[:2]
    oh, ow = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, kernel.shape[-1]))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride]
            out += patch @ kernel[i, j]
    return out


def np_bn(x, dual_bn_layer):
    """Inference-mode BN with the (single) branch's variables."""
    bn = dual_bn_layer.bn_normal
    g, b, m, v = (np.asarray(w, np.float64) for w in (bn.gamma, bn.beta, bn.moving_mean,
                                                      bn.moving_variance))
    return (x - m) / np.sqrt(v + bn.epsilon) * g + b


def randomise(layer, seed=0):
    """Random values for every variable (BN variances positive), so no term can hide."""
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        value = rng.normal(size=w.shape)
        if "variance" in w.path:
            value = rng.uniform(0.5, 2.0, size=w.shape)
        w.assign(value.astype("float32"))


def np_basic_block(block, x, pad):
    out = np.maximum(np_bn(np_conv2d(x, block.conv1.kernel, block.stride, pad), block.bn1), 0)
    out = np_bn(np_conv2d(out, block.conv2.kernel, 1, (1, 1)), block.bn2)
    shortcut = np_bn(np_conv2d(x, block.shortcut_conv.kernel, block.stride, (0, 0)),
                     block.shortcut_bn)
    return np.maximum(out + shortcut, 0)


def np_wide_block(block, x, pad):
    pre = np.maximum(np_bn(x, block.bn1), 0)
    out = np_conv2d(pre, block.conv1.kernel, block.stride, pad)
    out = np_conv2d(np.maximum(np_bn(out, block.bn2), 0), block.conv2.kernel, 1, (1, 1))
    return out + np_conv2d(pre, block.shortcut_conv.kernel, block.stride, (0, 0))


@pytest.mark.parametrize("block_cls, reference", [(BasicBlock, np_basic_block),
                                                  (WideBasicBlock, np_wide_block)])
@pytest.mark.parametrize("size", [8, 7])
def test_strided_block_pads_as_pytorch(block_cls, reference, size):
    """Layout 2 (the default): the stride-2 3x3 conv pads one pixel each side (PyTorch's
    padding=1), the stride-1 one too, the 1x1 stride-2 shortcut none; so its first output pixel
    is centred on input pixel 0, where the shortcut samples."""
    x = np.random.default_rng(1).normal(size=(2, size, size, 3)).astype("float32")
    block = block_cls(4, stride=2, dual_bn=False, in_filters=3)
    assert block.layout_version == LAYOUT_VERSION == 2
    block(x)
    randomise(block)
    got = block(x, training=False).numpy()
    assert got.shape == (2, (size + 2 - 3) // 2 + 1, (size + 2 - 3) // 2 + 1, 4)
    np.testing.assert_allclose(got, reference(block, x, (1, 1)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("block_cls, reference", [(BasicBlock, np_basic_block),
                                                  (WideBasicBlock, np_wide_block)])
def test_legacy_layout_keeps_keras_same_padding(block_cls, reference):
    """Layout 1 (files saved before layout_version): "same" pads an even input (0, 1), so the same
    weights give other outputs than layout 2; on an odd input "same" is (1, 1) and both agree."""
    even = np.random.default_rng(2).normal(size=(2, 8, 8, 3)).astype("float32")
    odd = even[:, :7, :7]
    legacy = block_cls(4, stride=2, dual_bn=False, in_filters=3, layout_version=1)
    current = block_cls(4, stride=2, dual_bn=False, in_filters=3)
    legacy(even), current(even)
    randomise(legacy)
    current.set_weights(legacy.get_weights())
    np.testing.assert_allclose(legacy(even).numpy(), reference(legacy, even, (0, 1)),
                               rtol=1e-4, atol=1e-4)
    assert np.abs(legacy(even).numpy() - current(even).numpy()).max() > 1e-2
    np.testing.assert_allclose(legacy(odd).numpy(), current(odd).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("factory", [lambda **kw: ResNet18(width=4, **kw),
                                     lambda **kw: WideResNet(depth=10, widen_factor=1, **kw)])
def test_encoder_layout_reaches_every_strided_conv(factory):
    """Every stride-2 3x3 conv of an encoder pads symmetrically (and only those are "valid"
    after an explicit padding); layout 1 keeps "same" everywhere."""
    for version in (1, 2):
        model = factory(layout_version=version)
        assert model.layout_version == version and model.get_config()["layout_version"] == version
        strided = [b for b in model.blocks if b.stride == 2]
        assert len(strided) == (3 if isinstance(model, ResNet18) else 2)
        for block in model.blocks:
            assert block.layout_version == version
            assert block.pad1 == (version == 2 and block.stride == 2)
            assert block.conv1.padding == ("valid" if block.pad1 else "same")
            assert block.conv2.padding == "same" and block.conv2.strides == (1, 1)
            if block.shortcut_conv is not None:
                assert block.shortcut_conv.kernel_size == (1, 1)
                assert block.shortcut_conv.padding == "valid"
        assert model.stem_conv.strides == (1, 1) and model.stem_conv.padding == "same"


def test_unknown_layout_version_is_refused():
    for bad in (0, 3, "2", True):
        with pytest.raises(ValueError, match="layout_version"):
            ResNet18(width=4, layout_version=bad)


# -- files saved before layout_version ------------------------------------------------------------
def strip_layout_version(path):
    """Rewrites a ``.keras`` file as acl-tf wrote it before ``layout_version`` existed."""
    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "layout_version"}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(entries["config.json"])
    assert "layout_version" in json.dumps(config)
    entries["config.json"] = json.dumps(strip(config)).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)


@pytest.mark.parametrize("wrap", [False, True], ids=["encoder", "classifier"])
def test_file_without_layout_version_loads_legacy_layout(wrap, tmp_path, caplog):
    """An old file loads with the padding it was trained with (layout 1) and a warning naming the
    legacy layout, never silently with the new padding (which would change its features)."""
    legacy = ResNet18(width=4, layout_version=1)
    x = images()
    legacy(x)
    perturb_adv_statistics(legacy)
    model = Classifier(legacy, num_classes=3) if wrap else legacy
    model(x)
    if wrap:
        model.fc.kernel.assign(np.random.default_rng(0).normal(size=(32, 3)).astype("float32"))
    want = model(x, branch="adv").numpy()
    path = tmp_path / "old.keras"
    model.save(path)
    strip_layout_version(path)
    with caplog.at_level(logging.WARNING):
        loaded = keras.saving.load_model(path, compile=False)
    encoder = loaded.encoder if wrap else loaded
    assert encoder.layout_version == 1
    assert "layout_version" in caplog.text and "legacy layout" in caplog.text
    np.testing.assert_allclose(loaded(x, branch="adv").numpy(), want, atol=1e-5)
    # The same weights in the PyTorch-matching layout compute something else: why the field exists.
    current = ResNet18(width=4)
    current(x)
    current.set_weights(encoder.get_weights())
    assert np.abs(current(x, branch="adv").numpy() - encoder(x, branch="adv").numpy()).max() > 1e-3


def test_new_files_record_layout_version(tmp_path, caplog):
    model = ResNet18(width=4)
    model(images(1))
    path = tmp_path / "new.keras"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        assert json.loads(archive.read("config.json"))["config"]["layout_version"] == 2
    with caplog.at_level(logging.WARNING):
        assert keras.saving.load_model(path, compile=False).layout_version == 2
    assert "layout_version" not in caplog.text


@pytest.mark.parametrize("factory", [lambda: ResNet18(width=4, layout_version=1),
                                     lambda: WideResNet(depth=10, widen_factor=1,
                                                        layout_version=1)])
def test_legacy_encoder_roundtrip(factory, tmp_path):
    """A layout-1 model saved now records its layout and round-trips as layout 1."""
    model = factory()
    x = images()
    model(x)
    perturb_adv_statistics(model)
    restored = assert_round_trip(model, x, tmp_path, calls=[{"branch": "normal"},
                                                            {"branch": "adv"}])
    assert restored.layout_version == 1
