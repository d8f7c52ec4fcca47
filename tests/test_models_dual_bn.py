"""acl_tf.models.dual_bn: the two BN branches, their .keras round trip, and the fused batch-norm
path (which computes what Keras' BatchNormalization does)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras_roundtrip import assert_round_trip

from acl_tf.models import DualBatchNormalization
from acl_tf.models.dual_bn import _can_fuse, fused_batch_norm


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


@pytest.mark.parametrize("dual", [True, False])
def test_dual_bn_roundtrip_per_branch(dual, tmp_path):
    bn = DualBatchNormalization(dual=dual, momentum=0.5, epsilon=1e-3)
    x = np.random.default_rng(7).normal(1.0, 2.0, (16, 5)).astype("float32")
    bn(x, training=True, branch="adv")     # the adv statistics move away from the normal ones
    loaded = assert_round_trip(bn, x, tmp_path, calls=[{"branch": "normal"}, {"branch": "adv"}])
    assert (loaded.dual, loaded.momentum, loaded.epsilon) == (dual, 0.5, 1e-3)
    assert (loaded.bn_adv is loaded.bn_normal) == (not dual)
    if dual:
        assert not np.allclose(loaded(x, branch="normal"), loaded(x, branch="adv"))


def _pair(shape, momentum=0.9):
    """A DualBatchNormalization and a plain Keras BN with the same (non-trivial) parameters."""
    rng = np.random.default_rng(0)
    channels = shape[-1]
    dual = DualBatchNormalization(dual=False, momentum=momentum)
    dual.build(shape)
    plain = keras.layers.BatchNormalization(momentum=momentum, epsilon=1e-5)
    plain.build(shape)
    values = [rng.normal(1.0, 0.3, channels), rng.normal(0.0, 0.3, channels),
              rng.normal(0.0, 0.5, channels), rng.uniform(0.5, 2.0, channels)]
    for layer in (dual.bn_normal, plain):
        for var, value in zip((layer.gamma, layer.beta, layer.moving_mean,
                               layer.moving_variance), values):
            var.assign(value.astype(np.float32))
    return dual, plain


@pytest.mark.parametrize("shape", [(6, 5, 4, 3), (10, 7)])
@pytest.mark.parametrize("training", [True, False])
def test_fused_matches_keras_batch_norm(shape, training):
    dual, plain = _pair(shape)
    assert _can_fuse(dual.bn_normal, tf.zeros(shape))
    x = tf.constant(np.random.default_rng(1).normal(2.0, 3.0, shape).astype(np.float32))
    weights = tf.constant(np.random.default_rng(2).normal(size=shape).astype(np.float32))

    def run(fn, layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
            loss = tf.reduce_sum(y * weights)
        grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
        return y, grads

    y_f, g_f = run(lambda t: dual(t, training=training), dual.bn_normal)
    y_k, g_k = run(lambda t: plain(t, training=training), plain)
    np.testing.assert_allclose(y_f, y_k, rtol=1e-4, atol=1e-4)
    for a, b in zip(g_f, g_k):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    # Moving statistics: updated identically in training (biased variance), untouched otherwise.
    np.testing.assert_allclose(dual.bn_normal.moving_mean, plain.moving_mean, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(dual.bn_normal.moving_variance, plain.moving_variance,
                               rtol=1e-5, atol=1e-6)


def test_fused_moving_variance_is_the_biased_batch_variance():
    """With momentum 0 the moving statistics are the batch's (NumPy reference, ddof=0)."""
    x = np.random.default_rng(3).normal(size=(4, 3, 2, 5)).astype(np.float32)
    bn = DualBatchNormalization(momentum=0.0)
    bn(x, training=True, branch="adv")
    np.testing.assert_allclose(bn.bn_adv.moving_mean, x.mean((0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.bn_adv.moving_variance, x.var((0, 1, 2)), rtol=1e-4)


def test_frozen_bn_uses_moving_statistics_even_in_training():
    dual, plain = _pair((8, 3))
    dual.bn_normal.trainable = False
    plain.trainable = False
    x = np.random.default_rng(4).normal(size=(8, 3)).astype(np.float32)
    np.testing.assert_allclose(dual(x, training=True), plain(x, training=True), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(dual.bn_normal.moving_mean, plain.moving_mean)


def test_synchronized_bn_keeps_the_keras_path():
    bn = DualBatchNormalization(synchronized=True)
    bn.build((2, 3))
    assert not _can_fuse(bn.bn_normal, tf.zeros((2, 3)))


def test_fused_bn_in_bfloat16_keeps_float32_statistics():
    dual, plain = _pair((16, 4, 4, 8))
    x = np.random.default_rng(5).normal(size=(16, 4, 4, 8)).astype(np.float32)
    y = fused_batch_norm(dual.bn_normal, tf.cast(x, tf.bfloat16), training=True)
    assert y.dtype == tf.bfloat16
    assert dual.bn_normal.moving_mean.dtype == "float32"
    np.testing.assert_allclose(tf.cast(y, tf.float32), plain(x, training=True), atol=0.05)
    np.testing.assert_allclose(dual.bn_normal.moving_mean, plain.moving_mean, atol=1e-2)


def test_float64_keeps_the_keras_path():
    """The fused kernel has no float64 version: a float64 BN computes in float64 as before."""
    bn = DualBatchNormalization(dtype="float64")
    x = np.random.default_rng(6).normal(size=(8, 3))
    bn.build(x.shape)
    assert not _can_fuse(bn.bn_normal, tf.constant(x))
    y = bn(x, training=True)
    assert y.dtype == tf.float64
    np.testing.assert_allclose(y, (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5), rtol=1e-10)
