"""The semi-supervised label split (acl_tf.data.label_split): class-balanced, deterministic,
disjoint from (and equal to fine-tuning's) validation hold-out; rounding and errors."""

import numpy as np
import pytest

from acl_tf import data as data_lib
from acl_tf.data.label_split import label_split, labels_per_class_for


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
