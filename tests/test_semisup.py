"""Semi-supervised adversarial training: the losses against NumPy, the label split, the
pseudo-label artifact, the mixed student batches, the two trainers and the command line."""

import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from acl_tf import data as data_lib
from acl_tf.configs import ConfigError, SemisupConfig, load_config
from acl_tf.data.pseudo_labels import (
    PseudoLabelError,
    PseudoLabels,
    load_pseudo_labels,
    make_pseudo_labels,
    predict_logits,
    save_pseudo_labels,
)
from acl_tf.losses import (
    SEMISUP_TERMS,
    distillation_loss,
    semisup_student_loss,
    soft_labels,
    trades_kl,
)
from acl_tf.models import Classifier, ResNet18
from acl_tf.optimizers import SGDL2
from acl_tf.tasks.semisup import (
    label_split,
    labels_per_class_for,
    make_student_dataset,
    student_batch_sizes,
)
from acl_tf.trainers.semisup import SemisupStudent, TeacherTrainer

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_DIR = os.path.join(PROJECT_ROOT, "data", "cifar10_sample")
RNG = np.random.default_rng(0)


# -- NumPy references ----------------------------------------------------------------------------
def np_log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def np_softmax(z):
    return np.exp(np_log_softmax(z))


def np_distill(student, p, temperature):
    return -(np.asarray(p, np.float64) * np_log_softmax(np.asarray(student) / temperature)).sum(1)


def np_ce(logits, labels):
    return -np_log_softmax(logits)[np.arange(len(labels)), labels]


def np_kl(clean, adv):
    log_p = np_log_softmax(clean)
    return (np.exp(log_p) * (log_p - np_log_softmax(adv))).sum(1)


def np_semisup(clean, adv, labels, p, labelled, alpha, temperature, beta, weight, convention):
    n = len(adv)
    a_ce, a_kd = (alpha, 1 - alpha) if convention == "paper" else (1 - alpha, alpha)
    kd = np_distill(adv, p, temperature)
    t2 = weight * temperature ** 2
    return {"ce_labelled": a_ce * np_ce(adv[labelled], labels[labelled]).sum() / n,
            "distill_labelled": a_kd * t2 * kd[labelled].sum() / n,
            "distill_unlabelled": t2 * kd[~labelled].sum() / n,
            "robust_kl": beta * np_kl(clean, adv).sum() / n}


def random_batch(n=12, classes=5, n_labelled=4):
    clean = RNG.normal(size=(n, classes)).astype(np.float32) * 2
    adv = (clean + RNG.normal(size=(n, classes))).astype(np.float32)
    p = np_softmax(RNG.normal(size=(n, classes)) * 3).astype(np.float32)
    labelled = np.zeros(n, bool)
    labelled[RNG.choice(n, n_labelled, replace=False)] = True
    labels = np.where(labelled, RNG.integers(0, classes, n), -1).astype(np.int64)
    return clean, adv, labels, p, labelled


# -- losses --------------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_distillation_loss_matches_numpy(temperature):
    student = RNG.normal(size=(6, 10)).astype(np.float32) * 3
    p = np_softmax(RNG.normal(size=(6, 10))).astype(np.float32)
    expected = np_distill(student, p, temperature)
    got = distillation_loss(student, p, temperature, reduction="none").numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert float(distillation_loss(student, p, temperature)) == pytest.approx(expected.mean(),
                                                                            rel=1e-5)
    assert float(distillation_loss(student, p, temperature, "sum")) == pytest.approx(
        expected.sum(), rel=1e-5)


def test_distillation_is_kl_plus_teacher_entropy():
    """KD(z, p, T) = KL(p || softmax(z / T)) + H(p): minimal, and equal to H(p), at z = T log p."""
    p = np_softmax(RNG.normal(size=(4, 10)))
    entropy = -(p * np.log(p)).sum(1)
    for temperature in (1.0, 3.0):
        at_teacher = temperature * np.log(p)
        got = distillation_loss(at_teacher.astype(np.float32), p.astype(np.float32), temperature,
                                reduction="none").numpy()
        np.testing.assert_allclose(got, entropy, rtol=1e-5)
        other = RNG.normal(size=(4, 10)).astype(np.float32)
        kl = (p * (np.log(p) - np_log_softmax(other / temperature))).sum(1)
        np.testing.assert_allclose(distillation_loss(other, p.astype(np.float32), temperature,
                                                     "none").numpy(), kl + entropy, rtol=1e-5)


def test_soft_labels_are_the_tempered_softmax():
    logits = RNG.normal(size=(3, 10)).astype(np.float32)
    np.testing.assert_allclose(soft_labels(logits, 2.0).numpy(), np_softmax(logits / 2.0),
                               rtol=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        soft_labels(logits, 0.0)


@pytest.mark.parametrize("alpha,temperature,beta,weight,convention", [
    (0.5, 1.0, 6.0, 1.0, "paper"), (0.3, 2.0, 6.0, 1.0, "paper"), (0.3, 2.0, 1.0, 0.5, "code"),
    (1.0, 4.0, 0.0, 1.0, "paper")])
def test_semisup_student_loss_term_by_term(alpha, temperature, beta, weight, convention):
    clean, adv, labels, p, labelled = random_batch()
    expected = np_semisup(clean, adv, labels, p, labelled, alpha, temperature, beta, weight,
                          convention)
    loss, terms = semisup_student_loss(clean, adv, labels, p, labelled, alpha=alpha,
                                       temperature=temperature, beta=beta, distill_weight=weight,
                                       alpha_convention=convention, return_terms=True)
    assert set(terms) == set(SEMISUP_TERMS)
    for name in SEMISUP_TERMS:
        assert float(terms[name]) == pytest.approx(expected[name], rel=1e-5, abs=1e-7), name
    assert float(loss) == pytest.approx(sum(expected.values()), rel=1e-5)


def test_semisup_loss_properties():
    clean, adv, labels, p, labelled = random_batch()
    base = float(semisup_student_loss(clean, adv, labels, p, labelled))
    # The labels of unlabelled images are never read.
    other = np.where(labelled, labels, RNG.integers(0, 5, len(labels)))
    assert float(semisup_student_loss(clean, adv, other, p, labelled)) == pytest.approx(base)
    # The two conventions agree at alpha = 0.5 and differ elsewhere.
    assert float(semisup_student_loss(clean, adv, labels, p, labelled,
                                      alpha_convention="code")) == pytest.approx(base)
    assert float(semisup_student_loss(clean, adv, labels, p, labelled, alpha=0.2)) != \
        pytest.approx(float(semisup_student_loss(clean, adv, labels, p, labelled, alpha=0.2,
                                                 alpha_convention="code")))
    # All unlabelled, beta 0, T 1: the mean distillation loss; the KL term is TRADES' KL.
    none = np.zeros(len(labels), bool)
    assert float(semisup_student_loss(clean, adv, labels, p, none, beta=0.0)) == pytest.approx(
        np_distill(adv, p, 1.0).mean(), rel=1e-5)
    _, terms = semisup_student_loss(clean, adv, labels, p, labelled, beta=2.0, return_terms=True)
    assert float(terms["robust_kl"]) == pytest.approx(2.0 * float(trades_kl(clean, adv)), rel=1e-5)
    # Gradients reach both the clean and the adversarial logits.
    c, a = tf.Variable(clean), tf.Variable(adv)
    with tf.GradientTape() as tape:
        loss = semisup_student_loss(c, a, labels, p, labelled)
    grads = tape.gradient(loss, [c, a])
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)


@pytest.mark.parametrize("kwargs,message", [
    ({"alpha": 1.5}, "alpha"), ({"beta": -1.0}, "beta"), ({"temperature": 0.0}, "temperature"),
    ({"alpha_convention": "torch"}, "alpha_convention")])
def test_semisup_loss_rejects_bad_arguments(kwargs, message):
    clean, adv, labels, p, labelled = random_batch()
    with pytest.raises(ValueError, match=message):
        semisup_student_loss(clean, adv, labels, p, labelled, **kwargs)


# -- the label split -----------------------------------------------------------------------------
def uneven_labels(n=1200, classes=10, seed=1):
    """Labels with unequal class sizes (as in a prefix of CIFAR-10)."""
    weights = np.linspace(1.0, 2.0, classes)
    return np.random.default_rng(seed).choice(classes, n, p=weights / weights.sum())


def test_label_split_is_balanced_deterministic_and_disjoint_from_validation():
    labels = uneven_labels()
    split = label_split(labels, num_classes=10, val_size=100, label_fraction=0.1, seed=3)
    # 1100 images after the hold-out: 10% of them is 11 per class.
    assert labels_per_class_for(0.1, 1100, 10) == 11
    np.testing.assert_array_equal(np.bincount(labels[split.labelled], minlength=10), [11] * 10)
    np.testing.assert_array_equal(np.bincount(labels[split.validation], minlength=10), [10] * 10)
    parts = [split.labelled, split.unlabelled, split.validation]
    assert sum(len(p) for p in parts) == len(labels)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))
    assert not set(split.labelled) & set(split.validation)
    # Deterministic, seed-dependent, and the validation split of acl_tf.finetune for that seed.
    again = label_split(labels, num_classes=10, val_size=100, label_fraction=0.1, seed=3)
    np.testing.assert_array_equal(again.labelled, split.labelled)
    other = label_split(labels, num_classes=10, val_size=100, label_fraction=0.1, seed=4)
    assert not np.array_equal(other.labelled, split.labelled)
    data = data_lib.ImageData(images=np.zeros((len(labels), 1, 1, 3), np.uint8), labels=labels,
                              ids=np.asarray([str(i) for i in range(len(labels))]),
                              num_classes=10)
    _, val = data_lib.train_val_split(data, val_size=100, seed=3)
    np.testing.assert_array_equal(val.ids.astype(int), split.validation)
    # A larger fraction contains more labels; labels_per_class gives exactly that many.
    per_class = label_split(labels, num_classes=10, val_size=100, labels_per_class=7, seed=3)
    np.testing.assert_array_equal(np.bincount(labels[per_class.labelled], minlength=10), [7] * 10)
    is_labelled, is_validation = split.masks(len(labels))
    assert is_labelled.sum() == 110 and is_validation.sum() == 100


def test_label_split_errors_and_rounding():
    labels = uneven_labels(200)
    assert labels_per_class_for(0.01, 45000, 10) == 45
    assert labels_per_class_for(0.1, 450, 10) == 5       # 4.5 rounds half up
    assert labels_per_class_for(0.001, 100, 10) == 1     # never empty
    with pytest.raises(ValueError, match="exactly one"):
        label_split(labels, num_classes=10, val_size=20)
    with pytest.raises(ValueError, match="exactly one"):
        label_split(labels, num_classes=10, val_size=20, label_fraction=0.1, labels_per_class=2)
    with pytest.raises(ValueError, match="multiple of num_classes"):
        label_split(labels, num_classes=10, val_size=25, label_fraction=0.1)
    with pytest.raises(data_lib.DataError, match="class .* has only"):
        label_split(labels, num_classes=10, val_size=20, labels_per_class=30)


def test_semisup_config_checks():
    config = load_config(SemisupConfig, "semisup", "cifar10_paper")
    assert (config.label_fraction, config.temperature, config.student.alpha,
            config.student.beta, config.student.attack.steps) == (0.01, 1.0, 0.5, 6.0, 10)
    assert config.student.optimizer.weight_decay == 5e-4
    assert load_config(SemisupConfig, "semisup", "smoke").data.source == "data/cifar10_sample"
    for overrides, message in [
            (["labels_per_class=4"], "exactly one"),
            (["label_fraction=null"], "exactly one"),
            (["label_fraction=1.5"], "label_fraction"),
            (["val_size=15"], "val_size"),
            (["temperature=0"], "temperature"),
            (["student.alpha=2"], "alpha"),
            (["student.alpha_convention=torch"], "alpha_convention"),
            (["student.select_by=loss"], "select_by"),
            (["teacher.epochs=0"], "teacher")]:
        with pytest.raises(ConfigError, match=message):
            load_config(SemisupConfig, "semisup", "smoke", overrides)


# -- the pseudo-label artifact -------------------------------------------------------------------
def make_artifact(n=20, classes=10, temperature=2.0):
    logits = RNG.normal(size=(n, classes)).astype(np.float32)
    is_labelled = np.zeros(n, bool)
    is_labelled[:3] = True
    is_validation = np.zeros(n, bool)
    is_validation[-4:] = True
    return PseudoLabels(ids=[f"img/{i}" for i in range(n)],
                        probs=np_softmax(logits / temperature).astype(np.float32), logits=logits,
                        labels_true=RNG.integers(0, classes, n), is_labelled=is_labelled,
                        is_validation=is_validation, temperature=temperature, teacher="t.keras")


def test_pseudo_label_file_round_trip(tmp_path):
    pseudo = make_artifact()
    path = save_pseudo_labels(tmp_path / "pseudo_labels.npz", pseudo)
    assert sorted(os.listdir(tmp_path)) == ["pseudo_labels.npz"]  # no temporary file left
    loaded = load_pseudo_labels(tmp_path)   # a directory means DIR/pseudo_labels.npz
    for field in ("ids", "probs", "logits", "labels_true", "is_labelled", "is_validation"):
        np.testing.assert_array_equal(getattr(loaded, field), getattr(pseudo, field))
    assert (loaded.temperature, loaded.teacher) == (2.0, "t.keras")
    with np.load(path) as raw:   # plain NumPy can read it (e.g. a TFX component)
        assert raw["ids"].dtype.kind == "U" and raw["is_labelled"].dtype == bool
    hits = pseudo.hard_labels == pseudo.labels_true
    diagnostics = loaded.diagnostics()
    assert diagnostics["pseudo_label_accuracy"] == pytest.approx(hits.mean())
    assert diagnostics["pseudo_label_accuracy_unlabelled"] == pytest.approx(hits[3:-4].mean())
    assert (diagnostics["num_labelled"], diagnostics["num_unlabelled"],
            diagnostics["num_validation"]) == (3, 13, 4)


def test_pseudo_label_file_errors(tmp_path):
    with pytest.raises(PseudoLabelError, match="does not exist.*--step=pseudo_label"):
        load_pseudo_labels(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(PseudoLabelError, match="not a readable .npz"):
        load_pseudo_labels(tmp_path / "junk.npz")
    pseudo = make_artifact()
    fields = {"ids": pseudo.ids, "probs": pseudo.probs, "logits": pseudo.logits,
              "labels_true": pseudo.labels_true, "is_labelled": pseudo.is_labelled,
              "is_validation": pseudo.is_validation, "temperature": np.float64(2.0),
              "teacher": np.asarray("t")}

    def write(name, **changes):
        path = tmp_path / name
        values = {k: v for k, v in {**fields, **changes}.items() if v is not None}
        with open(path, "wb") as f:
            np.savez(f, **values)
        return path

    cases = [({"probs": None}, r"missing field\(s\) \['probs'\]"),
             ({"probs": pseudo.probs[:5]}, "'probs' must have shape"),
             ({"probs": pseudo.probs * 2}, "probability vectors"),
             ({"labels_true": pseudo.labels_true + 10}, "outside"),
             ({"is_labelled": pseudo.is_validation}, "both labelled and in the validation"),
             ({"is_labelled": pseudo.is_labelled.astype(int)}, "must be bool"),
             ({"ids": np.asarray(["same"] * 20)}, "not unique"),
             ({"temperature": np.float64(-1)}, "temperature")]
    for i, (changes, message) in enumerate(cases):
        with pytest.raises(PseudoLabelError, match=message) as info:
            load_pseudo_labels(write(f"bad{i}.npz", **changes))
        assert f"bad{i}.npz" in str(info.value)
    with pytest.raises(PseudoLabelError, match="must end in .npz"):
        save_pseudo_labels(tmp_path / "x.txt", pseudo)


def tiny_classifier(branch="adv", width=4):
    classifier = Classifier(ResNet18(width=width), 10, branch=branch)
    classifier(np.zeros((2, 32, 32, 3), np.float32))
    # A non-zero head so that predictions differ between images.
    classifier.fc.kernel.assign(RNG.normal(size=classifier.fc.kernel.shape).astype(np.float32))
    return classifier


def test_make_pseudo_labels_from_a_model():
    classifier = tiny_classifier(branch="normal")
    data = data_lib.ImageData(images=RNG.integers(0, 256, (7, 32, 32, 3)).astype(np.uint8),
                              labels=RNG.integers(0, 10, 7), ids=np.asarray(list("abcdefg")),
                              num_classes=10)
    is_labelled = np.array([1, 0, 0, 0, 0, 0, 0], bool)
    is_validation = np.array([0, 0, 0, 0, 0, 1, 1], bool)
    pseudo = make_pseudo_labels(classifier, data, is_labelled=is_labelled,
                                is_validation=is_validation, temperature=3.0, batch_size=3)
    expected = classifier(data.to_float(), training=False).numpy()
    np.testing.assert_allclose(pseudo.logits, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pseudo.probs, np_softmax(expected / 3.0), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(pseudo.ids, data.ids)
    assert pseudo.accuracy() == pytest.approx(np.mean(expected.argmax(1) == data.labels))
    # The adv branch (given other statistics here) gives other logits than the classifier's
    # own (normal) branch.
    for v in classifier.weights:
        if v.path.endswith("/adv/moving_mean"):
            v.assign(v + 0.5)
    adv = predict_logits(classifier, data.images, branch="adv")
    assert not np.allclose(adv, pseudo.logits)


# -- the student's batches -----------------------------------------------------------------------
def test_student_batch_sizes():
    assert student_batch_sizes(45, 405, 64) == (6, 58, 7)      # rate 0.1: 6.4 -> 6
    assert student_batch_sizes(450, 44550, 128) == (1, 127, 351)  # 1%: at least one labelled
    assert student_batch_sizes(100, 100, 2) == (1, 1, 100)
    with pytest.raises(ConfigError, match="labelled and unlabelled"):
        student_batch_sizes(10, 0, 64)


def test_student_dataset_mixes_labelled_and_unlabelled():
    n = 60
    images = np.zeros((n, 32, 32, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(n)             # pixel (0, 0) encodes the image index
    labels = np.arange(n) % 10
    targets = np_softmax(RNG.normal(size=(n, 10))).astype(np.float32)
    labelled = np.arange(0, 10)
    unlabelled = np.arange(10, 50)                # 50..59: validation, never served
    dataset, steps = make_student_dataset(images, labels, targets, labelled, unlabelled,
                                          batch_size=8, seed=0, epoch=0, augment=False)
    n_l, n_u, expected_steps = student_batch_sizes(10, 40, 8)
    assert (n_l, n_u) == (2, 6) and steps == expected_steps == 7
    batches = list(dataset.as_numpy_iterator())
    assert len(batches) == steps
    seen_unlabelled = []
    for batch in batches:
        index = np.round(batch["images"][:, 0, 0, 0] * 255).astype(int)
        np.testing.assert_array_equal(batch["is_labelled"], [True] * n_l + [False] * n_u)
        assert set(index[:n_l]) <= set(labelled) and set(index[n_l:]) <= set(unlabelled)
        np.testing.assert_array_equal(batch["labels"][:n_l], labels[index[:n_l]])
        np.testing.assert_array_equal(batch["labels"][n_l:], -1)   # true labels never served
        np.testing.assert_allclose(batch["targets"], targets[index])
        seen_unlabelled.extend(index[n_l:])
    assert set(seen_unlabelled) == set(unlabelled)           # one pass over the unlabelled
    again, _ = make_student_dataset(images, labels, targets, labelled, unlabelled, batch_size=8,
                                    seed=0, epoch=0, augment=False)
    np.testing.assert_array_equal(next(iter(again))["images"], batches[0]["images"])
    later, _ = make_student_dataset(images, labels, targets, labelled, unlabelled, batch_size=8,
                                    seed=0, epoch=1, augment=False)
    assert not np.array_equal(next(iter(later))["images"], batches[0]["images"])


# -- the trainers --------------------------------------------------------------------------------
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


# -- the routine and the command line ------------------------------------------------------------
TINY = ["data.limit=200", "val_size=20", "labels_per_class=3", "label_fraction=null",
        "teacher.epochs=2", "teacher.batch_size=16", "student.batch_size=32",
        "student.attack.steps=1", "eval_attack.steps=2", "eval_batch_size=200"]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    """A width-4 dual-BN encoder saved as a pre-training run would save it."""
    run_dir = tmp_path_factory.mktemp("pretrained")
    encoder = ResNet18(width=4, dual_bn=True)
    encoder(np.zeros((1, 32, 32, 3), np.float32))
    encoder.save(run_dir / "encoder.keras")
    return run_dir


def run_cli(*args, timeout=400):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "acl_tf.semisup", *args], cwd=PROJECT_ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.e2e
def test_cli_steps_one_by_one_on_the_sample(encoder_dir, tmp_path):
    out, encoder = tmp_path / "semi", tmp_path / "encoder"
    shutil.copytree(encoder_dir, encoder)
    common = [f"--model_dir={out}", *[f"--set={s}" for s in TINY]]
    result = run_cli("--config=smoke", f"--pretrained={encoder}", "--step=teacher", *common)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "teacher" / "best.keras").exists() and "teacher test accuracy" in result.stdout
    # Later steps read the saved config (no --config), as the README's commands do; labelling
    # needs the teacher only, not the pre-trained encoder.
    shutil.rmtree(encoder)
    result = run_cli("--step=pseudo_label", f"--model_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    shutil.copytree(encoder_dir, encoder)
    result = run_cli("--step=student", f"--model_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]

    summary = json.loads((out / "metrics.json").read_text())
    for key in ("pseudo_label_accuracy", "teacher_test_accuracy", "student_test_accuracy",
                "student_test_robust_accuracy"):
        assert 0.0 <= summary[key] <= 1.0, key
    assert (summary["num_labelled"], summary["num_validation"], summary["num_unlabelled"]) == (
        30, 20, 150)
    assert summary["pretrained"] == str(encoder) and summary["robust_attack"] == "pgd2"
    pseudo = load_pseudo_labels(out / "pseudo_labels.npz")
    assert len(pseudo) == 200 and pseudo.is_labelled.sum() == 30
    assert summary["pseudo_label_accuracy"] == pytest.approx(pseudo.accuracy())
    teacher = keras.saving.load_model(out / "teacher" / "best.keras", compile=False)
    assert teacher.branch == "normal" and teacher.encoder.width == 4   # from the encoder
    np.testing.assert_allclose(pseudo.logits[:5], teacher(
        data_lib.load(SAMPLE_DIR, limit=5).to_float(), training=False).numpy(), atol=1e-4)
    student = keras.saving.load_model(out / "student" / "best.keras", compile=False)
    assert student.branch == "adv"
    history = json.loads((out / "student" / "history.json").read_text())
    assert {"loss", "ce_labelled", "distill_unlabelled", "robust_kl", "val_adv_acc"} <= set(
        history[-1])
    exported = tf.saved_model.load(summary["student_saved_model"])
    assert {"serving_default", "serving_adv", "serving_normal"} <= set(exported.signatures)


@pytest.mark.slow
def test_vanilla_routine_in_process_and_resume(tmp_path):
    """Without pre-training (vanilla UAT++): the whole routine, then resume skips every step."""
    from acl_tf.tasks.semisup import run_semisup

    config = load_config(SemisupConfig, "semisup", "smoke", TINY + [
        f"data.source={SAMPLE_DIR}", "model.width=4", "teacher.epochs=1", "evaluate_test=false"])
    summary = run_semisup(config, tmp_path, verbose=0)
    assert summary["pretrained"] is None
    assert "teacher_test_accuracy" not in summary and "student_test_accuracy" not in summary
    assert 0.0 <= summary["pseudo_label_accuracy"] <= 1.0
    assert summary["student_best_epoch"] == 1 and summary["teacher_best_epoch"] == 1
    assert summary["num_labelled"] == 30 and summary["num_unlabelled"] == 150
    stamp = (tmp_path / "pseudo_labels.npz").stat().st_mtime_ns
    assert run_semisup(config, tmp_path, resume=True, verbose=0) == summary
    assert (tmp_path / "pseudo_labels.npz").stat().st_mtime_ns == stamp
    # A finished step is not overwritten without --resume.
    from acl_tf.tasks.fit import RunDirError
    from acl_tf.tasks.semisup import run_student

    with pytest.raises(RunDirError, match="--resume"):
        run_semisup(config, tmp_path, step="student", verbose=0)
    # The student refuses pseudo-labels made for another split or temperature.

    other = load_config(SemisupConfig, "semisup", "smoke", TINY + [
        f"data.source={SAMPLE_DIR}", "model.width=4", "labels_per_class=4"])
    with pytest.raises(ConfigError, match="another label split"):
        run_student(other, tmp_path, verbose=0)
    hot = load_config(SemisupConfig, "semisup", "smoke", TINY + [
        f"data.source={SAMPLE_DIR}", "model.width=4", "temperature=2"])
    with pytest.raises(ConfigError, match="T=1 but the config has temperature=2"):
        run_student(hot, tmp_path, verbose=0)
    fewer = load_config(SemisupConfig, "semisup", "smoke", TINY + [
        f"data.source={SAMPLE_DIR}", "model.width=4", "data.limit=150"])
    with pytest.raises(PseudoLabelError, match="labels 200 images but the training data has 150"):
        run_student(fewer, tmp_path, verbose=0)


def test_missing_inputs_and_flag_errors(tmp_path):
    from acl_tf.cli.semisup import resolve_config
    from acl_tf.tasks.semisup import run_semisup

    config = load_config(SemisupConfig, "semisup", "smoke")
    with pytest.raises(ConfigError, match="No teacher classifier"):
        run_semisup(config, tmp_path, step="pseudo_label")
    with pytest.raises(PseudoLabelError, match="pseudo_labels.npz' does not exist"):
        run_semisup(config, tmp_path, step="student")
    with pytest.raises(ConfigError, match="--teacher is an input of --step=pseudo_label"):
        run_semisup(config, tmp_path, step="student", teacher="x.keras")
    with pytest.raises(ValueError, match="Unknown step"):
        run_semisup(config, tmp_path, step="distill")
    with pytest.raises(ConfigError, match="not both"):
        resolve_config("smoke", [], label_fraction=0.1, labels_per_class=3, model_dir=tmp_path)
    resolved = resolve_config("smoke", [], labels_per_class=3, model_dir=tmp_path)
    assert (resolved.labels_per_class, resolved.label_fraction) == (3, None)


@pytest.mark.e2e
def test_cli_reports_errors(tmp_path):
    result = run_cli("--config=smoke", "--step=pseudo_label", f"--model_dir={tmp_path}")
    assert result.returncode == 2 and "No teacher classifier" in result.stderr
