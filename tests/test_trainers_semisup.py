"""The semi-supervised trainers (acl_tf.trainers.semisup): the student's train step is the
semi-supervised loss and trains the adv branch, the teacher trains the normal branch only, both
save and load."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from numpy_refs import np_softmax

from acl_tf.losses import SEMISUP_TERMS
from acl_tf.models import Classifier, ResNet18
from acl_tf.optimizers import SGDL2
from acl_tf.trainers.semisup import SemisupStudent, TeacherTrainer

RNG = np.random.default_rng(0)


def tiny_classifier(branch="adv", width=4):
    classifier = Classifier(ResNet18(width=width), 10, branch=branch)
    classifier(np.zeros((2, 32, 32, 3), np.float32))
    # A non-zero head so that predictions differ between images.
    classifier.fc.kernel.assign(RNG.normal(size=classifier.fc.kernel.shape).astype(np.float32))
    return classifier


def bn_variables(model, branch):
    return {v.path: v.numpy().copy() for v in model.weights if f"/{branch}" in v.path}


def student_batch(n=8, n_labelled=3):
    targets = np_softmax(RNG.normal(size=(n, 10)) * 3).astype(np.float32)
    is_labelled = np.arange(n) < n_labelled
    return {"images": RNG.uniform(0, 1, (n, 32, 32, 3)).astype(np.float32),
            "labels": np.where(is_labelled, RNG.integers(0, 10, n), -1).astype(np.int64),
            "targets": targets, "is_labelled": is_labelled}


def test_student_train_step_is_the_semisup_loss_and_trains_the_adv_branch():
    classifier = tiny_classifier(branch="adv")
    model = SemisupStudent(classifier, alpha=0.3, temperature=2.0, beta=6.0,
                           attack={"steps": 2}, seed=5)
    model.compile(optimizer=SGDL2(0.05, momentum=0.9))
    model.optimizer.build(model.trainable_variables)
    batch = student_batch()
    # The attack targets: the label if labelled, else the arg-max pseudo-label.
    targets = model.attack_targets(batch["labels"], batch["targets"], batch["is_labelled"])
    np.testing.assert_array_equal(targets.numpy(), np.where(
        batch["is_labelled"], batch["labels"], batch["targets"].argmax(1)))
    # The loss of the first step, computed by hand with the attack of the first step's seed.
    weights = model.get_weights()
    x_adv = model.adversarial_examples(batch["images"], targets, tf.constant([5 * 1_000_003, 0],
                                                                           tf.int64))
    assert float(tf.reduce_max(tf.abs(x_adv - batch["images"]))) <= 8 / 255 + 1e-6
    expected, _, _, _ = model.compute_loss_terms(
        {k: tf.constant(v) for k, v in batch.items()}, x_adv)
    model.set_weights(weights)     # undo the BN statistics updated by that training pass
    normal_before, adv_before = bn_variables(model, "normal"), bn_variables(model, "adv")
    fc_before = classifier.fc.kernel.numpy().copy()
    logs = model.train_on_batch(batch, return_dict=True)
    assert logs["loss"] == pytest.approx(float(expected), rel=1e-4)
    assert logs["loss"] == pytest.approx(sum(logs[k] for k in SEMISUP_TERMS), rel=1e-5)
    assert not np.allclose(classifier.fc.kernel.numpy(), fc_before)
    for path, value in bn_variables(model, "normal").items():
        np.testing.assert_array_equal(value, normal_before[path], err_msg=path)
    assert any(not np.allclose(v, adv_before[p]) for p, v in bn_variables(model, "adv").items())


def test_teacher_trains_the_normal_branch_only():
    classifier = tiny_classifier(branch="normal")
    model = TeacherTrainer(classifier)
    model.compile(optimizer=SGDL2(0.05, momentum=0.9))
    x = RNG.uniform(0, 1, (8, 32, 32, 3)).astype(np.float32)
    y = RNG.integers(0, 10, 8)
    adv_before = bn_variables(model, "adv")
    logits = classifier(x, training=True)
    expected = float(tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
        y, logits, from_logits=True)))
    first = model.train_on_batch(x, y, return_dict=True)
    assert first["loss"] == pytest.approx(expected, rel=1e-4)
    for _ in range(4):
        last = model.train_on_batch(x, y, return_dict=True)
    assert last["loss"] < first["loss"]
    for path, value in bn_variables(model, "adv").items():
        np.testing.assert_array_equal(value, adv_before[path], err_msg=path)
    with pytest.raises(ValueError, match="freeze_encoder=False"):
        TeacherTrainer(Classifier(ResNet18(width=4), 10, freeze_encoder=True))


def test_trainers_save_and_load(tmp_path):
    student = SemisupStudent(tiny_classifier(), alpha=0.2, temperature=3.0, beta=2.0,
                             attack={"steps": 3}, distill_weight=0.5, alpha_convention="code",
                             seed=7)
    teacher = TeacherTrainer(tiny_classifier(branch="normal"))
    x = RNG.uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    for model, name in ((student, "student.keras"), (teacher, "teacher.keras")):
        model(x, training=False)
        model.save(tmp_path / name)
        loaded = keras.saving.load_model(tmp_path / name, compile=False)
        assert type(loaded) is type(model)
        np.testing.assert_allclose(loaded(x, training=False).numpy(),
                                   model(x, training=False).numpy(), rtol=1e-5, atol=1e-6)
        assert loaded.classifier.branch == model.classifier.branch
    loaded = keras.saving.load_model(tmp_path / "student.keras", compile=False)
    assert (loaded.alpha, loaded.temperature, loaded.beta, loaded.attack.steps,
            loaded.distill_weight, loaded.alpha_convention, loaded.seed) == (
        0.2, 3.0, 2.0, 3, 0.5, "code", 7)
    with pytest.raises(ValueError, match="alpha_convention"):
        SemisupStudent(tiny_classifier(), alpha_convention="torch")
