"""L-inf PGD: hand-solvable linear models, projection, eager vs tf.function, no side effects, loss
scaling (float16 gradients)."""

import numpy as np
import pytest
import tensorflow as tf
from tiny_pretrainer import make_pretrainer, views

from acl_tf.attacks import PGDConfig, model_loss_fn, pgd_linf, project
from acl_tf.losses import nt_xent
from acl_tf.models import ResNet18


def linear_loss(w):
    w = tf.constant(w, tf.float32)
    return lambda x: tf.reduce_sum(x * w)


@pytest.mark.parametrize("compiled", [False, True])
def test_linear_model_reaches_the_known_worst_case(compiled):
    # Maximising <w, x> over the eps-ball within [0, 1] moves every pixel by +eps*sign(w),
    # except where [0, 1] clips it first; zero-weight pixels never move (sign(0) = 0).
    w = np.array([[3.0, -2.0, 0.0, 5.0]], np.float32)
    x = np.array([[0.5, 0.5, 0.5, 0.99]], np.float32)
    config = PGDConfig(epsilon=0.1, step_size=0.03, steps=10, random_start="none")
    attack = tf.function(pgd_linf, autograph=False) if compiled else pgd_linf
    x_adv = attack(linear_loss(w), x, config).numpy()
    np.testing.assert_allclose(x_adv, [[0.6, 0.4, 0.5, 1.0]], atol=1e-6)


def test_step_count_and_size_by_hand():
    # Two steps of 0.02 with eps 0.1: the sign step moves exactly 0.04.
    w = np.array([[1.0, -1.0]], np.float32)
    x = np.array([[0.5, 0.5]], np.float32)
    config = PGDConfig(epsilon=0.1, step_size=0.02, steps=2, random_start="none")
    np.testing.assert_allclose(pgd_linf(linear_loss(w), x, config).numpy(), [[0.54, 0.46]],
                               atol=1e-6)


@pytest.mark.parametrize("start", ["uniform", "normal"])
def test_random_start_is_projected_and_seeded(start):
    x = np.random.default_rng(0).random((4, 8, 8, 3)).astype(np.float32)
    config = PGDConfig(epsilon=8 / 255, step_size=2 / 255, steps=0, random_start=start,
                       normal_std=0.5 if start == "normal" else 0.001)
    seed = tf.constant([1, 2], tf.int64)
    a = pgd_linf(lambda z: tf.reduce_sum(z), x, config, seed=seed).numpy()
    b = pgd_linf(lambda z: tf.reduce_sum(z), x, config, seed=seed).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - x).max() <= 8 / 255 + 1e-6
    assert a.min() >= 0 and a.max() <= 1
    assert np.abs(a - x).max() > 0


@pytest.mark.parametrize("compiled", [False, True])
def test_unprojected_start_as_the_reference_code(compiled):
    """project_start=False (the ACL/TRADES code): the first gradient is taken at x + noise even
    outside [0, 1]; the steps project as usual. With the loss <w, x>, w = +1: from x = 0 and the
    start -0.05 the step reaches -0.03, projected to 0; the projected start 0 reaches 0.02."""
    x = np.array([[0.0, 0.5]], np.float32)
    start = x + np.array([[-0.05, 0.05]], np.float32)
    seen = []

    def loss(z):
        seen.append(z)
        return tf.reduce_sum(z)

    for project_start, expected in [(False, [[0.0, 0.57]]), (True, [[0.02, 0.57]])]:
        config = PGDConfig(epsilon=0.1, step_size=0.02, steps=1, project_start=project_start)
        attack = tf.function(pgd_linf, autograph=False) if compiled else pgd_linf
        seen.clear()
        out = attack(loss, x, config, x_start=start, unroll=True).numpy()
        np.testing.assert_allclose(out, expected, atol=1e-6)
        if not compiled:
            np.testing.assert_allclose(seen[0].numpy(), start if not project_start else
                                       [[0.0, 0.55]], atol=1e-7)
    # The random start too: x + noise, not clipped to [0, 1], still inside the ball.
    x = np.zeros((2, 4, 4, 3), np.float32)
    config = PGDConfig(steps=0, project_start=False)
    out = pgd_linf(lambda z: tf.reduce_sum(z), x, config, seed=tf.constant([1, 2], tf.int64))
    assert out.numpy().min() < 0 and np.abs(out.numpy()).max() <= 8 / 255 + 1e-7


def test_projection():
    x = np.array([0.0, 0.5, 1.0], np.float32)
    out = project(np.array([-0.5, 0.9, 1.2], np.float32), x, 0.1).numpy()
    np.testing.assert_allclose(out, [0.0, 0.6, 1.0], atol=1e-7)


def test_no_gradient_is_an_error():
    with pytest.raises(ValueError, match="does not depend on its input"):
        pgd_linf(lambda z: tf.constant(1.0), np.zeros((1, 2), np.float32),
                 PGDConfig(steps=1, random_start="none"))


def test_bad_config():
    with pytest.raises(ValueError, match="random_start"):
        PGDConfig(random_start="gaussian")
    with pytest.raises(ValueError, match="steps"):
        PGDConfig(steps=-1)


def test_attack_changes_no_weights_or_bn_statistics():
    model = ResNet18(width=4)
    x = np.random.default_rng(0).random((4, 32, 32, 3)).astype(np.float32)
    model(x, training=True, branch="adv")
    before = [w.numpy().copy() for w in model.weights]
    labels = tf.constant([0, 1, 2, 3])

    def ce(features):
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, features[:, :10]))

    config = PGDConfig(steps=3)
    x_adv = tf.function(pgd_linf)(model_loss_fn(model, ce, "adv"), x, config).numpy()
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(w.numpy(), b, err_msg=w.path)
    assert np.abs(x_adv - x).max() <= config.epsilon + 1e-6
    # The attack raised the loss it maximises (inference-mode BN on the adv branch).
    loss_fn = model_loss_fn(model, ce, "adv")
    assert float(loss_fn(x_adv)) > float(loss_fn(x))


# -- loss scaling (mixed float16) ------------------------------------------------------------------
def test_pgd_loss_scale_rescues_underflowing_gradients():
    """A float16 gradient of 1e-4 * 1e-4 underflows to 0 (no step); scaled by 2^15 it does not."""
    x = tf.fill([2, 3], 0.5)
    small = tf.constant(1e-4, tf.float16)

    def loss_fn(x_adv):
        return tf.cast(tf.reduce_sum(tf.cast(x_adv, tf.float16) * small * small), tf.float32)

    config = PGDConfig(steps=1, random_start="none")
    unscaled = pgd_linf(loss_fn, x, config)
    scaled = pgd_linf(loss_fn, x, config, loss_scale=2.0 ** 15)
    np.testing.assert_array_equal(unscaled, x)
    np.testing.assert_allclose(scaled, x + config.step_size, rtol=1e-6)
    # A scale that overflows: an infinite gradient still gives its sign ...
    def big(v):
        return tf.reduce_sum(tf.cast(v, tf.float16) * tf.constant(1e4, tf.float16))

    overflow = pgd_linf(lambda v: tf.cast(big(v), tf.float32), x, config, loss_scale=1e30)
    np.testing.assert_allclose(overflow, x + config.step_size, rtol=1e-6)
    # ... and a NaN one (inf - inf) leaves the pixel in place instead of making it NaN.
    nan = pgd_linf(lambda v: tf.cast(big(v) - big(v), tf.float32), x, config, loss_scale=1e30)
    np.testing.assert_array_equal(nan, x)


def test_pgd_loss_scale_does_not_change_a_float32_attack():
    model = make_pretrainer("a2a")
    v1, v2 = views(4)
    x = tf.concat([v1, v2], 0)

    def loss_fn(x_adv):
        z = model(x_adv, training=False, branch="adv")
        return nt_xent(z[:4], z[4:])

    seed = tf.constant([3, 4], tf.int64)
    plain = pgd_linf(loss_fn, x, PGDConfig(steps=3), seed=seed)
    scaled = pgd_linf(loss_fn, x, PGDConfig(steps=3), seed=seed, loss_scale=1024.0)
    np.testing.assert_array_equal(plain, scaled)
