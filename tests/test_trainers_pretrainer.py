"""acl_tf.trainers.pretrainer: which passes of the ACL train_step use which BN and mode, the DS
loss, the attack, the .keras round trip, the DS step's one-stream-at-a-time gradient and mixed
precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras_roundtrip import assert_round_trip
from tiny_pretrainer import make_pretrainer, views

from acl_tf.attacks import PGDConfig
from acl_tf.losses import nt_xent
from acl_tf.trainers.pretrainer import ACLPretrainer

EPS = 8 / 255


class RecordingPretrainer(ACLPretrainer):
    """Records (training, branch, batch) of every forward pass (run eagerly)."""

    calls = None

    def call(self, images, training=None, branch="normal"):
        if self.calls is not None:
            self.calls.append((bool(training), branch, int(images.shape[0])))
        return super().call(images, training=training, branch=branch)


# (training, branch, batch size) of each forward pass for B = 4 images and 2 attack steps.
EXPECTED_PASSES = {
    "s2s": [(True, "normal", 8)],
    "a2a": [(False, "adv", 8)] * 2 + [(True, "adv", 8)],
    "a2s": [(False, "normal", 4)] + [(False, "adv", 4)] * 2 + [(True, "adv", 4),
                                                               (True, "normal", 4)],
    "ds": [(True, "normal", 8)] + [(False, "adv", 8)] * 2 + [(True, "adv", 8)],
}


@pytest.mark.parametrize("variant", sorted(EXPECTED_PASSES))
def test_forward_passes_per_variant(variant):
    model = make_pretrainer(variant, cls=RecordingPretrainer, run_eagerly=True)
    v1, v2 = views()
    model.calls = []
    model.train_on_batch((v1, v2), np.zeros(4))
    assert model.calls == EXPECTED_PASSES[variant]


@pytest.mark.parametrize("variant", ["a2s", "ds"])
def test_dual_bn_variants_update_both_branches(variant):
    model = make_pretrainer(variant)
    def stats(branch):
        bn = model.encoder.stem_bn.bn_adv if branch == "adv" else model.encoder.stem_bn.bn_normal
        return bn.moving_mean.numpy().copy()
    before = {b: stats(b) for b in ("normal", "adv")}
    v1, v2 = views()
    logs = model.train_on_batch((v1, v2), np.zeros(4), return_dict=True)
    for branch in ("normal", "adv"):
        assert np.abs(stats(branch) - before[branch]).max() > 0, branch
    expected = {"loss", "adv_loss", "adv_acc"} | ({"clean_loss", "clean_acc"} if variant == "ds" else set())
    assert set(logs) == expected


@pytest.mark.parametrize("average,alpha", [(False, 1.0), (True, 1.0), (False, 0.5)])
def test_ds_loss_is_the_weighted_sum(average, alpha):
    model = make_pretrainer("ds", attack_steps=0, ds_alpha=alpha, ds_average=average)
    model.attack = PGDConfig(steps=0, random_start="none")  # adversarial views == clean views
    v1, v2 = views()
    total, results = model.compute_losses(tf.constant(v1), tf.constant(v2))
    pair = np.concatenate([v1, v2])
    z_n = model(pair, training=True, branch="normal").numpy()
    z_a = model(pair, training=True, branch="adv").numpy()
    clean = float(nt_xent(z_n[:4], z_n[4:]))
    adv = float(nt_xent(z_a[:4], z_a[4:]))
    expected = (clean + alpha * adv) / (2.0 if average else 1.0)
    assert float(total) == pytest.approx(expected, rel=1e-5)
    assert float(results["clean"][0]) == pytest.approx(clean, rel=1e-5)


def test_attack_raises_the_contrastive_loss():
    model = make_pretrainer("a2a", attack_steps=5)
    v1, v2 = views()
    adv = model.adversarial_views(tf.constant(v1), tf.constant(v2)).numpy()
    assert np.abs(adv - np.concatenate([v1, v2])).max() <= 8 / 255 + 1e-6

    def loss(x):
        z = model(x, training=False, branch="adv").numpy()
        return float(nt_xent(z[:4], z[4:]))

    assert loss(adv) > loss(np.concatenate([v1, v2]))


def test_unknown_variant():
    with pytest.raises(ValueError, match="Unknown ACL variant 'simclr'"):
        make_pretrainer("simclr")


def test_pretrainer_roundtrip(tmp_path):
    model = make_pretrainer("ds", ds_alpha=0.7, seed=3)
    v1, v2 = views()
    model.train_on_batch((v1, v2), np.zeros(4))
    restored = assert_round_trip(model, v1, tmp_path, calls=[{"branch": "normal"},
                                                             {"branch": "adv"}])
    assert (restored.variant, restored.ds_alpha, restored.seed) == ("ds", 0.7, 3)
    assert restored.attack == model.attack
    for branch in ("normal", "adv"):
        np.testing.assert_allclose(restored(v1, branch=branch).numpy(),
                                   model(v1, branch=branch).numpy(), atol=1e-5)


# -- the DS step computes its gradient one stream at a time ----------------------------------------
@pytest.mark.parametrize("average,alpha", [(False, 1.0), (True, 0.5)])
def test_ds_step_equals_one_gradient_of_the_summed_loss(average, alpha):
    """The streams' gradients, summed, update the model as one gradient of the DS loss does.

    The adversarial views are the (seeded, identical) random starts: PGD's sign steps would turn
    rounding differences of two thread-parallel computations into different views now and then.
    The weights come from a fixed seed: float32 rounding of the two orders, scaled by LARS's
    per-layer trust ratio, depends on them, and the test must not depend on the tests before it.
    """
    keras.utils.set_random_seed(0)
    fast = make_pretrainer("ds", ds_alpha=alpha, ds_average=average, attack_steps=0)
    reference = make_pretrainer("ds", ds_alpha=alpha, ds_average=average, attack_steps=0)
    before = fast.get_weights()
    reference.set_weights(before)
    v1, v2 = views(4)
    logs = fast.train_on_batch((v1, v2), np.zeros(4), return_dict=True)

    @tf.function
    def reference_step():
        with tf.GradientTape() as tape:
            total, _ = reference.compute_losses(tf.constant(v1), tf.constant(v2))
        variables = reference.trainable_variables
        reference.optimizer.apply(tape.gradient(total, variables), variables)
        return total

    total = reference_step()
    assert logs["loss"] == pytest.approx(float(total), rel=1e-5)
    # Every weight and moving statistic moves by the same amount (up to float32 rounding).
    # Biases followed by BN have a zero gradient, so their moves are pure rounding (~1e-7):
    # the absolute tolerance sits well above that and far below a real step (~1e-2 here).
    largest = max(np.abs(b - w0).max() for b, w0 in zip(reference.get_weights(), before))
    assert largest > 1e-3
    for a, b, w0, var in zip(fast.get_weights(), reference.get_weights(), before, fast.weights):
        moved_fast, moved_ref = a - w0, b - w0
        assert np.abs(moved_fast - moved_ref).max() <= 1e-3 * np.abs(moved_ref).max() + 1e-6, \
            var.path


# -- mixed precision keeps the attack's arithmetic float32 -----------------------------------------
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_attack_stays_float32_within_eps(policy, restore_policy):
    keras.mixed_precision.set_global_policy(policy)
    model = make_pretrainer("ds", width=8)
    model.optimizer.build(model.trainable_variables)
    bn = model.encoder.stem_bn.bn_adv
    assert bn.moving_mean.dtype == "float32" and bn.gamma.dtype == "float32"
    v1, v2 = (tf.constant(v) for v in views(4))
    x_adv = model.adversarial_views(v1, v2)
    clean = tf.concat([v1, v2], 0)
    assert x_adv.dtype == tf.float32
    delta = np.abs(x_adv.numpy() - clean.numpy())
    assert delta.max() <= EPS + 1e-6 and delta.max() > EPS / 2
    assert x_adv.numpy().min() >= 0.0 and x_adv.numpy().max() <= 1.0
    z = model(x_adv, training=False, branch="adv")
    assert z.dtype == (tf.bfloat16 if policy == "mixed_bfloat16" else tf.float16)
    assert nt_xent(z[:4], z[4:]).dtype == tf.float32
    # float16 compute: the attack differentiates the loss times the optimiser's loss scale.
    scale = model._attack_loss_scale()
    assert (scale is not None) == (policy == "mixed_float16")
