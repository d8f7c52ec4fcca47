"""acl_tf.models.resnet: input normalisation, ResNet-18 / WideResNet encoders and their .keras round
trips per BN branch (and build_encoder)."""

import numpy as np
import pytest
from keras_roundtrip import assert_round_trip
from model_helpers import images, perturb_adv_statistics

from acl_tf.models import ChannelNormalization, ResNet18, WideResNet, build_encoder


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
