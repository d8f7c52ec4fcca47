"""pipeline/components/pseudo_label.py: PseudoLabel's pseudo-labels, then the semi-supervised
student AdversarialTrain trains on them."""

import os

import numpy as np
import pytest

pytest.importorskip("tfx.v1")

from pipeline.components.adversarial_train import classifier_dir  # noqa: E402


def test_pseudo_label_then_student(components_student):
    from acl_tf.data.pseudo_labels import load_pseudo_labels

    # PseudoLabel, then AdversarialTrain(mode="semisup") on its pseudo-labels (the session
    # fixture, pipeline_helpers.build_student).
    labels, student = components_student
    pseudo = load_pseudo_labels(os.path.join(labels.uri, "pseudo_labels.npz"))
    assert len(pseudo) == 40 and pseudo.probs.shape == (40, 10)
    np.testing.assert_allclose(pseudo.probs.sum(axis=1), 1.0, rtol=1e-5)
    assert labels.get_float_custom_property("pseudo_label_accuracy") == pytest.approx(
        pseudo.accuracy())
    assert labels.get_float_custom_property("num_labelled") == 10   # labels_per_class=1

    assert classifier_dir(student) == os.path.join(student.uri, "student")
    assert os.path.isfile(os.path.join(classifier_dir(student), "best.keras"))
    assert os.path.isdir(os.path.join(classifier_dir(student), "saved_model", "1"))
    assert student.get_string_custom_property("stage") == "semisup"
