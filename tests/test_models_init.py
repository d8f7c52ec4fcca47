"""acl_tf.models.init: the PyTorch-matching initialisers (kaiming_normal_ fan_out for convolutions,
nn.Linear's defaults for Dense kernels and biases), their statistics in the encoders and the
projection head, and their config / .keras round trips."""

import keras
import numpy as np
import pytest
from keras_roundtrip import assert_round_trip

from acl_tf.models import (
    KaimingNormalFanOut,
    ProjectionHead,
    ResNet18,
    TorchLinearBias,
    TorchLinearKernel,
    WideResNet,
)


def test_kaiming_normal_fan_out_statistics():
    """N(0, 2 / fan_out) with fan_out = kh * kw * out, untruncated (Keras' he_normal uses fan_in
    and cuts at two standard deviations)."""
    w = np.asarray(KaimingNormalFanOut(seed=0)((3, 3, 64, 128)), np.float64)
    std = np.sqrt(2.0 / (3 * 3 * 128))
    assert abs(w.std() / std - 1) < 0.02
    assert abs(w.mean()) < 0.02 * std
    assert np.abs(w).max() > 3.5 * std, "the draw must not be truncated"
    kurtosis = ((w - w.mean()) ** 4).mean() / w.var() ** 2
    assert abs(kurtosis - 3) < 0.1


def test_torch_linear_kernel_and_bias_statistics():
    fan_in = 512
    bound = 1 / np.sqrt(fan_in)
    w = np.asarray(TorchLinearKernel(seed=0)((fan_in, 256)), np.float64)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert abs(w.std() / (bound / np.sqrt(3)) - 1) < 0.02  # uniform: std = bound / sqrt(3)
    b = np.asarray(TorchLinearBias(fan_in, seed=0)((4096,)), np.float64)
    assert np.abs(b).max() <= bound and np.abs(b).max() > 0.99 * bound
    assert abs(b.std() / (bound / np.sqrt(3)) - 1) < 0.05
    assert not np.asarray(TorchLinearBias(0)((5,))).any()
    with pytest.raises(ValueError, match="fan_in"):
        TorchLinearBias(-1)


@pytest.mark.parametrize("factory", [lambda: ResNet18(width=8),
                                     lambda: WideResNet(depth=16, widen_factor=2)])
def test_encoder_conv_kernels_are_kaiming_fan_out(factory):
    """Every conv kernel of an encoder: std sqrt(2 / fan_out), pooled over all of them after
    scaling each by its own std; each layer draws its own values."""
    model = factory()
    model(np.zeros((1, 32, 32, 3), "float32"))
    kernels = [w for w in model.weights if w.path.endswith("kernel")]
    assert kernels and all(len(k.shape) == 4 for k in kernels)
    scaled = [np.asarray(k).ravel() / np.sqrt(2.0 / (np.prod(k.shape[:2]) * k.shape[-1]))
              for k in kernels]
    pooled = np.concatenate(scaled)
    assert pooled.size > 20_000
    assert abs(pooled.std() - 1) < 0.02 and abs(pooled.mean()) < 0.02
    same_shape = {}
    for k in kernels:
        same_shape.setdefault(tuple(k.shape), []).append(np.asarray(k))
    repeated = [v for v in same_shape.values() if len(v) > 1]
    assert repeated, "the check needs two kernels of one shape"
    for values in repeated:
        assert not np.array_equal(values[0], values[1]), "two layers drew the same kernel"


@pytest.mark.parametrize("num_layers", [2, 3])
def test_projection_head_is_initialised_as_nn_linear(num_layers):
    in_dim, hidden = 48, 32
    head = ProjectionHead(hidden, 16, num_layers=num_layers)
    head(np.zeros((2, in_dim), "float32"))
    fan_ins = [in_dim] + [hidden] * (num_layers - 1)
    for dense, fan_in in zip(head.dense, fan_ins):
        bound = 1 / np.sqrt(fan_in)
        kernel = np.asarray(dense.kernel)
        assert kernel.shape[0] == fan_in
        assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.9 * bound
    bias = np.asarray(head.dense[0].bias)
    assert bias.any() and np.abs(bias).max() <= 1 / np.sqrt(in_dim)
    assert isinstance(head.dense[0].bias_initializer, TorchLinearBias)
    assert head.dense[0].bias_initializer.fan_in == in_dim
    for bn in head.bns:  # BN at PyTorch's defaults (momentum 0.1 = Keras 0.9, epsilon 1e-5)
        assert (bn.momentum, bn.epsilon) == (0.9, 1e-5)


@pytest.mark.parametrize("initializer", [KaimingNormalFanOut(seed=3), TorchLinearKernel(seed=3),
                                         TorchLinearBias(40, seed=3), TorchLinearBias(7)])
def test_initializer_config_roundtrip(initializer):
    restored = keras.initializers.deserialize(keras.initializers.serialize(initializer))
    assert type(restored) is type(initializer)
    assert restored.get_config() == initializer.get_config()
    if initializer.get_config()["seed"] is not None:
        np.testing.assert_array_equal(np.asarray(restored((6, 5))), np.asarray(initializer((6, 5))))


def test_layers_with_the_initializers_roundtrip(tmp_path):
    """A layer config naming the initialisers survives from_config and a .keras file."""
    x = np.random.default_rng(0).random((2, 6, 6, 3)).astype("float32")
    conv = keras.layers.Conv2D(4, 3, kernel_initializer=KaimingNormalFanOut(seed=1), name="c")
    restored = assert_round_trip(conv, x, tmp_path)
    assert isinstance(restored.kernel_initializer, KaimingNormalFanOut)
    dense = keras.layers.Dense(5, kernel_initializer=TorchLinearKernel(),
                               bias_initializer=TorchLinearBias(3), name="d")
    restored = assert_round_trip(dense, x[:, 0, 0], tmp_path, name="dense.keras")
    assert isinstance(restored.bias_initializer, TorchLinearBias)
    assert restored.bias_initializer.fan_in == 3
