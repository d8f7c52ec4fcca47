"""The student's mixed batches (acl_tf.data.mixing): batch sizes and the labelled / unlabelled
mix, reproducible per epoch."""

import numpy as np
import pytest
from numpy_refs import np_softmax

from acl_tf.configs import ConfigError
from acl_tf.data.mixing import make_student_dataset, student_batch_sizes

RNG = np.random.default_rng(0)


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
