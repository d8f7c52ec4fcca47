"""The fine-tuning trainer (acl_tf.trainers.finetuner.Finetuner): the train steps of AFF / ALF /
SLF update exactly the right weights, the AFF attack runs with inference-mode BN on its branch,
argument checks and the .keras round trip."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from acl_tf.attacks import PGDConfig, pgd_linf
from acl_tf.losses import trades_kl
from acl_tf.models import Classifier, ResNet18
from acl_tf.optimizers import SGDL2
from acl_tf.trainers.finetuner import Finetuner

RNG = np.random.default_rng(0)
IMAGES = RNG.uniform(0, 1, (8, 16, 16, 3)).astype(np.float32)
LABELS = RNG.integers(0, 10, 8).astype(np.int64)


def make_finetuner(mode, weight_decay=2e-4, attack_steps=2, branch="adv"):
    keras.utils.set_random_seed(1)
    classifier = Classifier(ResNet18(width=4), 10, branch=branch,
                            freeze_encoder=mode != "aff")
    model = Finetuner(classifier, mode=mode, attack=PGDConfig(steps=attack_steps))
    model(IMAGES[:2], training=False)
    model.compile(optimizer=SGDL2(0.1, momentum=0.9, weight_decay=weight_decay))
    return model


def short(variable):
    """``classifier/...`` whatever scope the classifier was built in."""
    return re.sub(r"^.*?classifier[^/]*/", "classifier/", variable.path)


def snapshot(model):
    return {short(v): v.numpy().copy() for v in model.classifier.weights}


def changed(before, model):
    return {short(v) for v in model.classifier.weights
            if not np.array_equal(before[short(v)], v.numpy())}


@pytest.mark.parametrize("mode", ["aff", "alf", "slf"])
def test_train_step_updates_exactly_the_right_weights(mode):
    model = make_finetuner(mode)
    before = snapshot(model)
    for _ in range(2):  # the linear layer starts at zero: the encoder gets gradients from step 2
        logs = model.train_step((tf.constant(IMAGES), tf.constant(LABELS)))
    assert np.isfinite(float(logs["loss"]))
    assert ("adv_acc" in logs) == (mode != "slf")
    moved = changed(before, model)
    fc = {"classifier/fc/kernel", "classifier/fc/bias"}
    assert fc <= moved
    if mode != "aff":
        assert moved == fc, f"{mode.upper()} changed encoder weights: {sorted(moved - fc)[:5]}"
        return
    encoder = {p for p in before if p.startswith("classifier/resnet18/")}
    adv = {p for p in encoder if "/adv/" in p}
    normal = {p for p in encoder if "/normal/" in p}
    convs = {p for p in encoder if p.endswith("/kernel")}
    assert convs <= moved, "AFF must train every convolution"
    assert adv <= moved, "AFF trains the adv BN (gamma/beta) and updates its statistics"
    assert not normal & moved, "the unused normal BN must be neither trained nor decayed"


def test_linear_modes_train_only_the_fc_layer_under_fit():
    model = make_finetuner("alf", attack_steps=1)
    before = snapshot(model)
    model.fit(tf.data.Dataset.from_tensor_slices((IMAGES, LABELS)).batch(4), epochs=1,
              verbose=0)
    assert changed(before, model) == {"classifier/fc/kernel", "classifier/fc/bias"}
    assert [short(v) for v in model.trainable_variables] == ["classifier/fc/kernel",
                                                           "classifier/fc/bias"]


def test_aff_attack_uses_inference_mode_bn_on_its_branch():
    model = make_finetuner("aff", attack_steps=3, branch="normal")
    clf = model.classifier
    clf.fc.kernel.assign(np.random.default_rng(2).normal(0, 1, clf.fc.kernel.shape))
    clf(IMAGES * 0.5, training=True, branch="adv")  # give the adv BN statistics of its own
    before = snapshot(model)
    x, seed = tf.constant(IMAGES), tf.constant([5, 0], tf.int64)
    x_adv = model.adversarial_examples(x, tf.constant(LABELS), seed).numpy()
    assert changed(before, model) == set(), "the attack changed weights or BN statistics"

    def reference(training, branch):
        clean = clf(x, training=False, branch=branch)
        return pgd_linf(lambda z: trades_kl(clean, clf(z, training=training, branch=branch),
                                            "sum"), x, model.attack, seed=seed).numpy()

    np.testing.assert_allclose(x_adv, reference(False, "normal"), atol=1e-6)
    assert np.abs(x_adv - x.numpy()).max() <= 8 / 255 + 1e-6
    # The comparison can fail: training-mode BN or the other branch give another x'.
    assert not np.allclose(x_adv, reference(True, "normal"), atol=1e-6)
    assert not np.allclose(x_adv, reference(False, "adv"), atol=1e-6)


def test_finetuner_checks_and_round_trip(tmp_path):
    frozen = Classifier(ResNet18(width=4), 10, freeze_encoder=True)
    with pytest.raises(ValueError, match="freeze_encoder=False"):
        Finetuner(frozen, mode="aff")
    with pytest.raises(ValueError, match="Unknown fine-tuning mode 'full'"):
        Finetuner(frozen, mode="full")
    assert Finetuner(Classifier(ResNet18(width=4), 10), mode="aff").attack == PGDConfig(
        steps=10, random_start="normal")
    assert Finetuner(frozen, mode="alf").attack == PGDConfig(steps=10, random_start="uniform")
    model = make_finetuner("aff")
    path = tmp_path / "finetuner.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    assert (loaded.mode, loaded.beta, loaded.attack) == (model.mode, model.beta, model.attack)
    np.testing.assert_allclose(loaded(IMAGES, training=False), model(IMAGES, training=False),
                               atol=1e-6)
