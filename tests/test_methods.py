"""ACL's successors on the DS variant: DynACL's schedules (augmentation strength, stream weights),
its code's momentum encoder, AIR's regularisers in the training step, and the pre-training task
that wires them (per-epoch datasets and weights; the crash/resume test of a DynACL run is in
test_tasks_pretrain.py)."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf
from pretrain_helpers import TINY
from tiny_pretrainer import make_pretrainer, views

from acl_tf.configs import AirConfig, AugmentConfig, ConfigError, PretrainConfig, load_config
from acl_tf.data.augment import make_pretrain_dataset, random_resized_crop
from acl_tf.losses import air_regularizers, nt_xent
from acl_tf.tasks.pretrain import StreamSchedule, build_pretrainer, run_pretraining


def preset(name, overrides=()):
    return load_config(PretrainConfig, "pretrain", name, list(overrides))


# -- schedules ------------------------------------------------------------------------------------
@pytest.mark.parametrize("epoch", [1, 2, 49, 50, 51, 99, 100, 101, 500, 950, 951, 999, 1000])
def test_dynacl_schedules_are_the_code_formulas(epoch):
    """train_DynACL.py: the strength of the epoch that last reloaded the data,
    1 - (reload epoch - 1) / epochs; the loss ((2 - w) clean + w adv) / 2 with
    w = min(1 + floor(epoch / 50) * (50 / 1000) * 2/3, 2)."""
    config = preset("cifar10_dynacl")
    reload_epoch = (epoch - 1) // 50 * 50 + 1
    w = min(1.0 + (epoch // 50) * (50 / 1000) * (2 / 3), 2.0)
    assert config.dynamic.strength(epoch, 1000) == pytest.approx(1 - (reload_epoch - 1) / 1000)
    assert config.stream_weights(epoch) == pytest.approx((2 - w, w))
    values = StreamSchedule(config).values(epoch - 1)     # halved: ds_average
    assert (values["clean_weight"], values["adv_weight"]) == pytest.approx(((2 - w) / 2, w / 2))


@pytest.mark.parametrize("epoch", [1, 50, 51, 100, 101, 1000])
def test_dynacl_air_schedules_are_the_code_formulas(epoch):
    """pretraining.py --DynAug: strength 1 - int((epoch - 1) / 50) * 50 / epochs, weight
    2/3 (1 - strength), loss (1 - w) clean + (1 + w) adv + ..."""
    config = preset("cifar10_dynacl_air")
    strength = 1 - int((epoch - 1) / 50) * 50 / 1000
    w = 2 / 3 * (1 - strength)
    assert config.dynamic.strength(epoch, 1000) == pytest.approx(strength)
    assert config.stream_weights(epoch) == pytest.approx((1 - w, 1 + w))
    assert StreamSchedule(config).values(epoch - 1)["adv_weight"] == pytest.approx(1 + w)


def test_short_runs_anneal_every_epoch():
    config = preset("smoke", ["method=dynacl", "epochs=5", "dynamic.reload_every=1"])
    assert [config.dynamic.strength(e, 5) for e in range(1, 6)] == pytest.approx(
        [1.0, 0.8, 0.6, 0.4, 0.2])
    # weight_lead 1: the weight of epoch e follows the strength of epoch e + 1
    assert [config.stream_weights(e)[1] for e in range(1, 6)] == pytest.approx(
        [1 + 2 / 3 * d for d in (0.2, 0.4, 0.6, 0.8, 1.0)])
    longer = dataclasses.replace(config.dynamic, anneal_epochs=10)
    assert longer.strength(5, 5) == pytest.approx(0.6)
    # ACL keeps its augmentation and weights
    acl = preset("smoke", ["epochs=5", "ds_alpha=2"])
    assert acl.augment_at(5) is acl.augment and acl.stream_weights(5) == (1.0, 2.0)


def test_augmentation_at_a_strength():
    base = AugmentConfig(crop_scale=(0.1, 1.0))
    assert base.at_strength(1.0) is base
    half = base.at_strength(0.5)
    assert half.crop_scale == pytest.approx((0.55, 1.0))       # (1 - 0.9 s, 1)
    assert (half.brightness, half.contrast, half.saturation, half.hue) == pytest.approx(
        (0.2, 0.2, 0.2, 0.05))
    assert (half.jitter_prob, half.grayscale_prob) == pytest.approx((0.4, 0.1))
    assert (half.flip_prob, half.crop_ratio, half.image_size) == (
        base.flip_prob, base.crop_ratio, base.image_size)
    none = base.at_strength(0.0)
    assert none.crop_scale == (1.0, 1.0) and none.jitter_prob == 0 and none.grayscale_prob == 0
    with pytest.raises(ConfigError, match="strength must be in"):
        base.at_strength(1.5)


@pytest.mark.parametrize("overrides,message", [
    (["method=dynacl", "variant=s2s"], "builds on the DS variant"),
    (["method=acl_air", "model.bn=single"], "needs the dual BN"),
    (["method=dynacl_air", "dynamic.momentum_encoder=true"], "no momentum encoder"),
    (["method=simclr"], "Unknown pre-training method"),
    (["air.divergence=js"], "Unknown AIR divergence"),
    (["augment.interpolation=nearest"], "Unknown crop interpolation"),
])
def test_bad_method_configs(overrides, message):
    with pytest.raises(ConfigError, match=message):
        preset("smoke", overrides)


# -- the training step ----------------------------------------------------------------------------
def test_dynamic_weights_weigh_the_streams():
    model = make_pretrainer("ds", dynamic_weights=True, ds_average=True)
    assert model.stream_weights.numpy() == pytest.approx([0.5, 0.5])   # ACL's until set
    model.stream_weights.assign([0.25, 0.875])
    v = views()
    total, results = model.compute_losses(v[0], v[1])
    expected = 0.25 * results["clean"][0] + 0.875 * results["adv"][0]
    assert float(total) == pytest.approx(float(expected), rel=1e-6)
    logs = model.train_on_batch((v[0], v[1]), np.zeros(4), return_dict=True)
    assert logs["loss"] == pytest.approx(0.25 * logs["clean_loss"] + 0.875 * logs["adv_loss"],
                                         rel=1e-5)


def test_momentum_encoder_follows_the_trained_weights_before_the_update():
    m = 0.9
    model = make_pretrainer("ds", momentum=m)
    v = views()
    model.build_key_encoder(v[0])
    pairs = model._key_pairs()
    assert pairs and all(np.array_equal(q.numpy(), k.numpy()) for q, k in pairs)
    # Move the key weights away, so that the average is visible.
    rng = np.random.default_rng(1)
    for _, k in pairs:
        k.assign(k.numpy() + rng.normal(0, 0.1, k.shape).astype(np.float32))
    q0 = [q.numpy() for q, _ in pairs]
    k0 = [k.numpy() for _, k in pairs]
    key_stats = [w for w in model.encoder_k.weights if "moving" in w.path]
    stats0 = [w.numpy() for w in key_stats]
    trainable = {id(w) for w in model.trainable_variables}
    assert not any(id(k) in trainable for _, k in pairs)
    model.train_on_batch((v[0], v[1]), np.zeros(4))
    for (q, k), qa, ka in zip(pairs, q0, k0):
        np.testing.assert_allclose(k.numpy(), m * ka + (1 - m) * qa, rtol=1e-5, atol=1e-6,
                                   err_msg=k.path)
    assert max(np.abs(q.numpy() - qa).max() for (q, _), qa in zip(pairs, q0)) > 1e-4
    # The key encoder's BN statistics are its own, from its training-mode passes.
    assert max(np.abs(w.numpy() - s).max() for w, s in zip(key_stats, stats0)) > 1e-6
    assert model.output_encoder is model.encoder_k


def test_momentum_pretrainer_saves_and_loads(tmp_path):
    model = make_pretrainer("ds", momentum=0.99, dynamic_weights=True)
    model.build_key_encoder(views()[0])
    model.stream_weights.assign([0.3, 1.7])
    path = tmp_path / "pretrainer.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.momentum == 0.99 and loaded.dynamic_weights
    assert len(loaded.trainable_variables) == len(model.trainable_variables)
    assert loaded.stream_weights.numpy() == pytest.approx([0.3, 1.7])
    x = views()[0]
    np.testing.assert_allclose(loaded.key_projection(x, training=False),
                               model.key_projection(x, training=False), atol=1e-5)


def test_air_step_adds_the_regularisers():
    air = AirConfig(lambda1=0.7, lambda2=1.3)
    model = make_pretrainer("ds", air=air, dynamic_weights=True)
    model.stream_weights.assign([0.75, 1.25])
    v = views()
    original = np.random.default_rng(3).random((4, 32, 32, 3), dtype=np.float32)
    logs = model.train_on_batch((v[0], v[1], original), np.zeros(4), return_dict=True)
    expected = (0.75 * logs["clean_loss"] + 1.25 * logs["adv_loss"] + 0.7 * logs["sir"]
                + 1.3 * logs["air"])
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)
    assert logs["sir"] != 0 and logs["air"] != 0
    with pytest.raises(ValueError, match="original"):
        model.train_on_batch((v[0], v[1]), np.zeros(4))


def test_air_regularisers_see_the_models_projections():
    """The step's SIR/AIR are the loss functions of the projections the model computes (with the
    weights before the update: the metrics are taken in the step)."""
    model = make_pretrainer("ds", air=AirConfig(), run_eagerly=True)
    v = views(seed=5)
    original = views(seed=6)[0]
    x_adv = model.adversarial_views(v[0], v[1])
    z_adv = model(x_adv, training=True, branch="adv")
    z = model(tf.concat([v[0], v[1]], 0), training=True, branch="normal")
    z_orig = model(original, training=True, branch="normal")
    sir, air = air_regularizers(z[:4], z[4:], z_orig, z_adv[:4], z_adv[4:])
    assert float(nt_xent(z[:4], z[4:])) > 0 and np.isfinite(float(sir) + float(air))


@pytest.mark.parametrize("kwargs,message", [
    ({"dynamic_weights": True}, "build on the DS variant"),
    ({"air": AirConfig()}, "build on the DS variant"),
])
def test_methods_need_ds(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_pretrainer("a2s", **kwargs)


def test_air_with_momentum_is_refused():
    with pytest.raises(ValueError, match="not supported"):
        make_pretrainer("ds", air=AirConfig(), momentum=0.99)


# -- data ---------------------------------------------------------------------------------------
def test_dataset_with_original_images():
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(6)
    plain = make_pretrain_dataset(images, labels, batch_size=3, seed=1, epoch=2)
    with_original = make_pretrain_dataset(images, labels, batch_size=3, seed=1, epoch=2,
                                          with_original=True)
    for ((a1, a2), la), ((b1, b2, original), lb) in zip(plain, with_original):
        np.testing.assert_array_equal(a1, b1)
        np.testing.assert_array_equal(a2, b2)
        np.testing.assert_array_equal(la, lb)
        np.testing.assert_allclose(original, images[lb.numpy()] / 255.0, atol=1e-7)


def test_bilinear_crop_resamples_bilinearly():
    image = tf.random.stateless_uniform([32, 32, 3], [1, 2])
    seed = tf.constant([3, 4])
    bilinear = random_resized_crop(image, seed, 32, (1.0, 1.0), (1.0, 1.0), "bilinear")
    bicubic = random_resized_crop(image, seed, 32, (1.0, 1.0), (1.0, 1.0))
    # A full-image crop at the same size is the identity for either resampling ...
    np.testing.assert_allclose(bilinear, image, atol=1e-6)
    np.testing.assert_allclose(bicubic, image, atol=1e-6)
    small_b = random_resized_crop(image, seed, 16, (0.5, 0.5), (1.0, 1.0), "bilinear")
    small_c = random_resized_crop(image, seed, 16, (0.5, 0.5), (1.0, 1.0), "bicubic")
    assert float(tf.reduce_max(tf.abs(small_b - small_c))) > 1e-3   # ... but not when resizing


# -- the task -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_dynacl_air_run(tmp_path):
    config = preset("smoke", TINY + ["method=dynacl_air", "epochs=2", "dynamic.reload_every=1",
                                     "dynamic.weight_lead=0"])
    model, history = run_pretraining(config, tmp_path / "run", verbose=0)
    assert [h["aug_strength"] for h in history] == pytest.approx([1.0, 0.5])
    assert [h["adv_weight"] for h in history] == pytest.approx([1.0, 1 + 1 / 3])
    assert all(np.isfinite(h["sir"]) and np.isfinite(h["air"]) for h in history)
    assert (tmp_path / "run" / "encoder.keras").exists()
    assert build_pretrainer(config).air == config.air
