"""Dual BN, encoders, projection head and classifier: behaviour and .keras round trips per branch."""

import keras
import numpy as np
import pytest

from acl_tf.models import (
    ChannelNormalization,
    Classifier,
    DualBatchNormalization,
    ProjectionHead,
    ResNet18,
    WideResNet,
    build_encoder,
)


def _images(n=4, seed=0):
    return np.random.default_rng(seed).random((n, 32, 32, 3), dtype=np.float32)


def _roundtrip(obj, tmp_path, name="m.keras"):
    path = tmp_path / name
    if isinstance(obj, keras.Model):
        obj.save(path)
        return keras.models.load_model(path)
    model = keras.Sequential([obj])
    model.save(path)
    return keras.models.load_model(path).layers[0]


def test_dual_bn_branches_keep_separate_statistics():
    bn = DualBatchNormalization(momentum=0.0)  # moving stats = last batch stats
    x = np.random.default_rng(0).normal(3.0, 2.0, (64, 5)).astype("float32")
    bn(x, training=True, branch="adv")
    np.testing.assert_allclose(bn.bn_adv.moving_mean.numpy(), x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(bn.bn_adv.moving_variance.numpy(), x.var(0), rtol=1e-4)
    np.testing.assert_array_equal(bn.bn_normal.moving_mean.numpy(), np.zeros(5))
    # Batch statistics in training mode normalise to mean 0 / var 1 on both branches.
    y = bn(x, training=True, branch="normal").numpy()
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(0), 1, atol=1e-3)
    # Inference uses each branch's own moving statistics.
    x2 = x[:4]
    adv = bn(x2, training=False, branch="adv").numpy()
    np.testing.assert_allclose(adv, (x2 - x.mean(0)) / np.sqrt(x.var(0) + 1e-5), rtol=1e-3,
                               atol=1e-4)


def test_single_bn_mode_shares_parameters():
    bn = DualBatchNormalization(dual=False)
    x = np.ones((2, 3), "float32")
    bn(x)
    assert len(bn.weights) == 4
    assert bn.bn_adv is bn.bn_normal


def test_unknown_branch_is_an_error():
    bn = DualBatchNormalization()
    with pytest.raises(ValueError, match="Unknown BN branch 'clean'"):
        bn(np.ones((2, 3), "float32"), branch="clean")


def test_channel_normalization():
    layer = ChannelNormalization(mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    x = np.ones((1, 2, 2, 3), "float32")
    np.testing.assert_allclose(layer(x).numpy()[0, 0, 0], [1.0, 3.0, 1.0])
    with pytest.raises(ValueError, match="std > 0"):
        ChannelNormalization(std=(1.0, 0.0, 1.0))


def test_resnet18_structure():
    model = build_encoder("resnet18", width=64)
    out = model(_images(2))
    assert out.shape == (2, 512)
    # The paper's 11.2M: torchvision-CIFAR ResNet-18 has 11,173,962 trainable parameters with its
    # 5,130-parameter fc layer; the encoder alone (single BN) must have the rest.
    single = build_encoder("resnet18", width=64, dual_bn=False)
    single(_images(1))
    assert sum(int(np.prod(w.shape)) for w in single.trainable_weights) == 11_173_962 - 5_130
    with pytest.raises(ValueError, match="Unknown architecture"):
        build_encoder("vgg")


def _perturb_adv_statistics(model):
    """Train-mode pass on the adv branch so the two branches' moving stats differ."""
    x = _images(8, seed=1) * 0.5 + 0.3
    for _ in range(3):
        model(x, training=True, branch="adv")


@pytest.mark.parametrize("factory", [lambda: ResNet18(width=4),
                                     lambda: WideResNet(depth=10, widen_factor=1)])
def test_encoder_roundtrip_per_branch(factory, tmp_path):
    model = factory()
    x = _images()
    model(x)
    _perturb_adv_statistics(model)
    normal, adv = model(x, branch="normal").numpy(), model(x, branch="adv").numpy()
    assert np.abs(normal - adv).max() > 1e-3, "branches must differ for the test to mean anything"
    restored = _roundtrip(model, tmp_path)
    assert restored.get_config() == model.get_config()
    np.testing.assert_allclose(restored(x, branch="normal").numpy(), normal, atol=1e-5)
    np.testing.assert_allclose(restored(x, branch="adv").numpy(), adv, atol=1e-5)


def test_wide_resnet_depth_check():
    with pytest.raises(ValueError, match="6n\\+4"):
        WideResNet(depth=33)


@pytest.mark.parametrize("num_layers", [2, 3])
def test_projection_head(num_layers, tmp_path):
    head = ProjectionHead(16, 8, num_layers=num_layers)
    f = np.random.default_rng(0).normal(size=(6, 12)).astype("float32")
    assert head(f).shape == (6, 8)
    dense_bias = [d.use_bias for d in head.dense]
    assert dense_bias == [True] + [False] * (num_layers - 1)
    head(f * 3 + 1, training=True, branch="adv")
    restored = _roundtrip(head, tmp_path)
    for branch in ("normal", "adv"):
        np.testing.assert_allclose(restored(f, branch=branch).numpy(),
                                   head(f, branch=branch).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="2 or 3"):
        ProjectionHead(num_layers=4)


def test_classifier_roundtrip_and_freeze(tmp_path):
    encoder = ResNet18(width=4)
    model = Classifier(encoder, num_classes=10, freeze_encoder=True)
    x = _images()
    assert np.all(model(x).numpy() == 0), "the linear head is zero-initialised"
    assert [w.path.split("/", 1)[1] for w in model.trainable_weights] == ["fc/kernel", "fc/bias"]
    model.fc.kernel.assign(np.random.default_rng(0).normal(size=(32, 10)).astype("float32"))
    _perturb_adv_statistics(encoder)
    restored = _roundtrip(model, tmp_path)
    assert restored.freeze_encoder and restored.branch == "adv"
    for branch in ("normal", "adv"):
        np.testing.assert_allclose(restored(x, branch=branch).numpy(),
                                   model(x, branch=branch).numpy(), atol=1e-5)
    np.testing.assert_allclose(model(x).numpy(), model(x, branch="adv").numpy())
