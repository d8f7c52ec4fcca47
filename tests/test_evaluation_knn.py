"""Weighted k-NN against a brute-force reference."""

import numpy as np
import pytest

from acl_tf.evaluation.knn import knn_predict


def brute_force(train, labels, test, num_classes, k, temperature):
    out = []
    for t in test:
        sim = train @ t
        order = np.argsort(-sim)[:k]
        votes = np.zeros(num_classes)
        for i in order:
            votes[labels[i]] += np.exp(sim[i] / temperature)
        out.append(votes.argmax())
    return np.array(out)


@pytest.mark.parametrize("k", [1, 5, 40])
def test_matches_brute_force(k):
    rng = np.random.default_rng(k)
    train = rng.normal(size=(60, 8))
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    test = rng.normal(size=(25, 8))
    test /= np.linalg.norm(test, axis=1, keepdims=True)
    labels = rng.integers(0, 4, 60)
    np.testing.assert_array_equal(knn_predict(train, labels, test, 4, k, 0.1, batch_size=7),
                                  brute_force(train, labels, test, 4, k, 0.1))


def test_one_nearest_neighbour_by_hand():
    train = np.array([[1.0, 0.0], [0.0, 1.0]])
    test = np.array([[0.9, 0.1], [0.2, 0.8]])
    test /= np.linalg.norm(test, axis=1, keepdims=True)
    np.testing.assert_array_equal(knn_predict(train, [3, 1], test, 4, k=1), [3, 1])
    with pytest.raises(ValueError, match="k must be"):
        knn_predict(train, [3, 1], test, 4, k=3)
