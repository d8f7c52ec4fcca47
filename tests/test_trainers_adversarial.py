"""The trainers' shared base (acl_tf.trainers.adversarial): gradients applied only where they
exist (no update, momentum or weight decay elsewhere), the loss scaling, the nested-object
serialisation, and the classifier trainer's checks, attack and metric trackers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from acl_tf.attacks import PGDConfig
from acl_tf.core.errors import AclTfError, ConfigError
from acl_tf.losses import cross_entropy
from acl_tf.models import Classifier, ResNet18
from acl_tf.optimizers import SGDL2
from acl_tf.trainers.adversarial import AdversarialTrainer, Trainer, as_pgd

RNG = np.random.default_rng(0)
IMAGES = RNG.uniform(0, 1, (4, 8, 8, 3)).astype(np.float32)
LABELS = np.array([0, 1, 2, 3], np.int64)


class TwoWeights(Trainer):
    """``x * a``: ``b`` never receives a gradient."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.a = self.add_weight(shape=(2,), initializer="ones", name="a")
        self.b = self.add_weight(shape=(2,), initializer="ones", name="b")

    def call(self, x):
        return x * self.a


@keras.saving.register_keras_serializable(package="acl_tf_tests")
class Wrapper(Trainer):
    """A trainer with one nested Keras object and one plain setting."""

    NESTED = ("inner",)

    def __init__(self, inner, factor: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner
        self.factor = factor

    def call(self, x):
        return self.inner(x) * self.factor

    def settings(self):
        return {"factor": self.factor}


def test_apply_gradients_skips_missing_gradients_entirely():
    """SGD with momentum 0.9 and coupled L2 0.5 (torch semantics, by hand): ``a`` moves twice,
    ``b`` (no gradient) gets no step, no momentum and no weight decay; the optimizer is built for
    both variables."""
    model = TwoWeights()
    model.compile(optimizer=SGDL2(0.1, momentum=0.9, weight_decay=0.5))
    g = np.array([1.0, -2.0], np.float32)
    for _ in range(2):
        model.apply_gradients([tf.constant(g), None], [model.a, model.b])
    # step 1: d = g + 0.5 * 1, buf = d, a = 1 - 0.1 d
    d1 = g + 0.5
    a1 = 1 - 0.1 * d1
    # step 2: d = g + 0.5 * a1, buf = 0.9 d1 + d, a = a1 - 0.1 buf
    a2 = a1 - 0.1 * (0.9 * d1 + (g + 0.5 * a1))
    np.testing.assert_allclose(model.a.numpy(), a2, rtol=1e-6)
    np.testing.assert_array_equal(model.b.numpy(), [1.0, 1.0])
    slots = [v for v in model.optimizer.variables if "momentum" in v.path]
    assert len(slots) == 2, [v.path for v in model.optimizer.variables]


def test_minimize_applies_the_tape_gradient():
    model = TwoWeights()
    model.compile(optimizer=SGDL2(0.5, momentum=0.0))
    x = tf.constant([2.0, 3.0])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x))          # d/da = x
        scaled = model.scaled_loss(loss)
    model.minimize(tape, scaled)
    np.testing.assert_allclose(model.a.numpy(), [1 - 0.5 * 2, 1 - 0.5 * 3])
    np.testing.assert_array_equal(model.b.numpy(), [1.0, 1.0])


def test_scaled_loss_applies_the_dynamic_loss_scale():
    model = TwoWeights()
    model.compile(optimizer=keras.optimizers.LossScaleOptimizer(SGDL2(0.1), initial_scale=8.0))
    assert float(model.scaled_loss(tf.constant(3.0))) == pytest.approx(24.0)
    plain = TwoWeights()
    plain.compile(optimizer=SGDL2(0.1))
    assert float(plain.scaled_loss(tf.constant(3.0))) == pytest.approx(3.0)


def test_nested_objects_and_settings_round_trip(tmp_path):
    inner = keras.layers.Dense(3, name="inner")
    model = Wrapper(inner, factor=2.5)
    x = RNG.normal(size=(2, 4)).astype(np.float32)
    expected = model(x).numpy()
    config = model.get_config()
    assert list(config) == ["name", "inner", "factor"] and config["factor"] == 2.5
    assert config["inner"]["class_name"] == "Dense"
    model.save(tmp_path / "wrapper.keras")
    loaded = keras.saving.load_model(tmp_path / "wrapper.keras", compile=False)
    assert type(loaded) is Wrapper and loaded.factor == 2.5
    assert isinstance(loaded.inner, keras.layers.Dense) and loaded.inner.units == 3
    np.testing.assert_allclose(loaded(x).numpy(), expected, rtol=1e-6)


def test_as_pgd():
    default = PGDConfig(steps=7)
    assert as_pgd(None, default) is default
    assert as_pgd({"steps": 3, "random_start": "none"}, default) == PGDConfig(
        steps=3, random_start="none")
    given = PGDConfig(steps=2)
    assert as_pgd(given, default) is given


def classifier(freeze_encoder=False, branch="adv"):
    keras.utils.set_random_seed(3)
    model = Classifier(ResNet18(width=4), 4, branch=branch, freeze_encoder=freeze_encoder)
    model(IMAGES[:2], training=False)
    model.fc.kernel.assign(RNG.normal(size=model.fc.kernel.shape).astype(np.float32))
    return model


def test_classifier_must_match_what_is_trained():
    with pytest.raises(ConfigError, match="The student trains the whole network: build the "
                                          "Classifier with freeze_encoder=False"):
        AdversarialTrainer(classifier(freeze_encoder=True), role="The student")
    with pytest.raises(ConfigError, match="ALF trains the linear layer only: build the "
                                          "Classifier with freeze_encoder=True") as info:
        AdversarialTrainer(classifier(), trains_encoder=False, role="ALF")
    assert isinstance(info.value, AclTfError) and isinstance(info.value, ValueError)


def test_trackers_and_their_logs():
    plain = AdversarialTrainer(classifier(), adversarial=False, term_names=("t1", "t2"))
    assert [m.name for m in plain.metrics] == ["loss", "t1", "t2", "acc"]
    model = AdversarialTrainer(classifier(), attack={"steps": 1})
    assert [m.name for m in model.metrics] == ["loss", "acc", "adv_acc"]
    labels = tf.constant([0, 1, 2, 3])
    logits = tf.one_hot([0, 1, 0, 0], 4)          # 2 of 4 right
    logits_adv = tf.one_hot([3, 3, 3, 3], 4)      # 1 of 4 right
    logs = model.update_metrics(tf.constant(2.0), labels, logits, logits_adv)
    assert {k: float(v) for k, v in logs.items()} == pytest.approx(
        {"loss": 2.0, "acc": 0.5, "adv_acc": 0.25})
    logs = plain.update_metrics(tf.constant(1.0), labels, logits,
                                terms={"t1": tf.constant(3.0), "t2": tf.constant(5.0)})
    assert {k: float(v) for k, v in logs.items()} == pytest.approx(
        {"loss": 1.0, "t1": 3.0, "t2": 5.0, "acc": 0.5})


def test_run_attack_stays_in_the_ball_leaves_the_model_alone_and_raises_the_loss():
    model = AdversarialTrainer(classifier(branch="normal"),
                               attack=PGDConfig(steps=5, epsilon=8 / 255))
    clf = model.classifier
    clf(IMAGES * 0.5, training=True, branch="normal")   # statistics of their own
    before = [w.numpy().copy() for w in model.weights]
    x = tf.constant(IMAGES)

    def loss(logits):
        return cross_entropy(LABELS, logits, "sum")

    seed = tf.constant([4, 0], tf.int64)
    x_adv = model.run_attack(x, loss, seed).numpy()
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights)), \
        "the attack changed weights or BN statistics"
    assert np.abs(x_adv - IMAGES).max() <= 8 / 255 + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    np.testing.assert_array_equal(model.run_attack(x, loss, seed).numpy(), x_adv)
    assert not np.array_equal(model.run_attack(x, loss, tf.constant([5, 0], tf.int64)).numpy(),
                              x_adv)

    def inference_loss(images):   # the attack's own objective: inference BN, the normal branch
        return float(loss(clf(images, training=False, branch="normal")))

    assert inference_loss(x_adv) > inference_loss(IMAGES)
