"""Weighted k-nearest-neighbour accuracy of frozen features (Wu et al. 2018, as SimCLR
implementations use to monitor pre-training without training a classifier)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def extract_features(encoder, images, branch: str = "normal", batch_size: int = 256):
    """L2-normalised encoder features of uint8 or [0, 1] float images, BN in inference mode."""
    images = np.asarray(images)
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    predict = tf.function(lambda x: encoder(x, training=False, branch=branch))
    out = []
    for start in range(0, len(images), batch_size):
        batch = tf.convert_to_tensor(images[start:start + batch_size], tf.float32) / scale
        out.append(tf.math.l2_normalize(predict(batch), axis=1).numpy())
    return np.concatenate(out)


def knn_predict(train_features, train_labels, test_features, num_classes: int, k: int = 200,
                temperature: float = 0.1, batch_size: int = 1024):
    """Predicted labels: each of the k most cosine-similar training features votes for its label
    with weight exp(similarity / temperature)."""
    if k < 1 or k > len(train_features):
        raise ValueError(f"k must be in [1, {len(train_features)}], got {k}.")
    train_labels = np.asarray(train_labels, np.int64)
    preds = []
    for start in range(0, len(test_features), batch_size):
        sim = test_features[start:start + batch_size] @ train_features.T
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        weights = np.exp(np.take_along_axis(sim, top, axis=1) / temperature)
        votes = np.zeros((len(sim), num_classes))
        np.add.at(votes, (np.arange(len(sim))[:, None], train_labels[top]), weights)
        preds.append(votes.argmax(1))
    return np.concatenate(preds)


def knn_accuracy(encoder, train, test, branch: str = "normal", k: int = 200,
                 temperature: float = 0.1) -> float:
    """k-NN test accuracy of ``encoder`` features; ``train``/``test`` are ImageData."""
    train_features = extract_features(encoder, train.images, branch)
    test_features = extract_features(encoder, test.images, branch)
    preds = knn_predict(train_features, train.labels, test_features, train.num_classes, k,
                        temperature)
    return float(np.mean(preds == test.labels))
