"""The pseudo-label artifact (acl_tf.data.pseudo_labels): file round trip, its errors, labelling
with a model."""

import os

import numpy as np
import pytest
from numpy_refs import np_softmax

from acl_tf import data as data_lib
from acl_tf.data.pseudo_labels import (
    PseudoLabelError,
    PseudoLabels,
    load_pseudo_labels,
    make_pseudo_labels,
    predict_logits,
    save_pseudo_labels,
)
from acl_tf.models import Classifier, ResNet18

RNG = np.random.default_rng(0)


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
