"""ACL train_step: which passes use which BN and mode, the DS loss, LARS and the schedule."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from acl_tf.attacks import PGDConfig
from acl_tf.losses import nt_xent
from acl_tf.models import ProjectionHead, ResNet18
from acl_tf.optimizers import LARS, warmup_cosine
from acl_tf.trainers.pretrainer import ACLPretrainer


class RecordingPretrainer(ACLPretrainer):
    """Records (training, branch, batch) of every forward pass (run eagerly)."""

    calls = None

    def call(self, images, training=None, branch="normal"):
        if self.calls is not None:
            self.calls.append((bool(training), branch, int(images.shape[0])))
        return super().call(images, training=training, branch=branch)


def make(variant, steps=2, dual=None, cls=ACLPretrainer, **kwargs):
    dual = variant in ("a2s", "ds") if dual is None else dual
    model = cls(ResNet18(width=4, dual_bn=dual), ProjectionHead(16, 8, dual_bn=dual),
                variant=variant, attack=PGDConfig(steps=steps), **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=cls is RecordingPretrainer)
    model(np.zeros((2, 32, 32, 3), np.float32))
    return model


def views(batch=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((2, batch, 32, 32, 3), dtype=np.float32)


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
    model = make(variant, cls=RecordingPretrainer)
    v1, v2 = views()
    model.calls = []
    model.train_on_batch((v1, v2), np.zeros(4))
    assert model.calls == EXPECTED_PASSES[variant]


@pytest.mark.parametrize("variant", ["a2s", "ds"])
def test_dual_bn_variants_update_both_branches(variant):
    model = make(variant)
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
    model = make("ds", steps=0, ds_alpha=alpha, ds_average=average)
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
    model = make("a2a", steps=5)
    v1, v2 = views()
    adv = model.adversarial_views(tf.constant(v1), tf.constant(v2)).numpy()
    assert np.abs(adv - np.concatenate([v1, v2])).max() <= 8 / 255 + 1e-6

    def loss(x):
        z = model(x, training=False, branch="adv").numpy()
        return float(nt_xent(z[:4], z[4:]))

    assert loss(adv) > loss(np.concatenate([v1, v2]))


def test_unknown_variant():
    with pytest.raises(ValueError, match="Unknown ACL variant 'simclr'"):
        make("simclr")


def test_pretrainer_roundtrip(tmp_path):
    model = make("ds", ds_alpha=0.7, seed=3)
    v1, v2 = views()
    model.train_on_batch((v1, v2), np.zeros(4))
    model.save(tmp_path / "p.keras")
    restored = keras.models.load_model(tmp_path / "p.keras")
    assert (restored.variant, restored.ds_alpha, restored.seed) == ("ds", 0.7, 3)
    assert restored.attack == model.attack
    for branch in ("normal", "adv"):
        np.testing.assert_allclose(restored(v1, branch=branch).numpy(),
                                   model(v1, branch=branch).numpy(), atol=1e-5)


def lars_numpy(w, g, v, lr, momentum, wd, eta):
    w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
    local = eta * w_norm / (g_norm + wd * w_norm) if w_norm > 1e-15 and g_norm > 1e-15 else 1.0
    v = momentum * v + lr * local * (g + wd * w)
    return w - v, v


def test_lars_matches_reference():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(3, 4)).astype(np.float32)
    b0 = np.zeros(4, np.float32)  # zero weights: trust ratio falls back to 1
    var_w, var_b = tf.Variable(w0), tf.Variable(b0)
    opt = LARS(learning_rate=2.0, momentum=0.9, weight_decay=1e-3, trust_coefficient=0.01)
    w, b, vw, vb = w0.astype(np.float64), b0.astype(np.float64), 0.0, 0.0
    for step in range(3):
        gw = rng.normal(size=w0.shape).astype(np.float32)
        gb = rng.normal(size=b0.shape).astype(np.float32)
        opt.apply([gw, gb], [var_w, var_b])
        w, vw = lars_numpy(w, gw, vw, 2.0, 0.9, 1e-3, 0.01)
        b, vb = lars_numpy(b, gb, vb, 2.0, 0.9, 1e-3, 0.01)
        np.testing.assert_allclose(var_w.numpy(), w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(var_b.numpy(), b, rtol=1e-5, atol=1e-6)


def reference_cosine(step, total, peak, final, warmup):
    if step < warmup:
        return peak * step / warmup
    return final + (peak - final) * 0.5 * (1 + math.cos((step - warmup) / (total - warmup) * math.pi))


def test_warmup_cosine_matches_reference():
    schedule = warmup_cosine(5.0, total_steps=100, warmup_steps=10, final_lr=1e-6)
    for step in [0, 1, 5, 10, 11, 50, 99, 100]:
        assert float(schedule(step)) == pytest.approx(reference_cosine(step, 100, 5.0, 1e-6, 10),
                                                      rel=1e-4, abs=1e-6), step
    with pytest.raises(ValueError, match="must exceed"):
        warmup_cosine(1.0, total_steps=10, warmup_steps=10)
