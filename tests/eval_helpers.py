"""Small models shared by the evaluation, export and serving tests."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


class LinearClassifier(keras.Model):
    """``logits = flatten(images) @ W[branch] + b[branch]``: a model whose robustness is known by
    hand (the worst L-inf perturbation of a linear score is ``-eps * ||w||_1``). Each BN branch has
    its own weights, so tests can tell which branch ran."""

    def __init__(self, weights: dict, biases: dict, branch: str = "adv", **kwargs):
        super().__init__(**kwargs)
        self.w = {k: tf.constant(v, tf.float32) for k, v in weights.items()}
        self.b = {k: tf.constant(v, tf.float32) for k, v in biases.items()}
        self.branch = branch

    def call(self, images, training=None, branch=None):
        branch = branch or self.branch
        flat = tf.reshape(images, [tf.shape(images)[0], -1])
        return flat @ self.w[branch] + self.b[branch]


def make_tiny_classifier(seed: int = 0, width: int = 4):
    """A width-``width`` dual-BN ResNet-18 :class:`acl_tf.models.Classifier` with random non-zero
    head weights and *different* random BN parameters/statistics per branch, so that tests on
    branch selection can fail."""
    from acl_tf.models import Classifier, DualBatchNormalization, build_encoder

    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    classifier = Classifier(build_encoder("resnet18", width=width, dual_bn=True), 10)
    for branch in ("normal", "adv"):
        classifier(np.zeros([1, 32, 32, 3], np.float32), training=False, branch=branch)
    for layer in classifier._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, DualBatchNormalization):
            for sub in (layer.bn_normal, layer.bn_adv):
                n = sub.gamma.shape[0]
                sub.gamma.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
                sub.beta.assign(rng.normal(0, 0.2, n).astype(np.float32))
                sub.moving_mean.assign(rng.normal(0, 0.5, n).astype(np.float32))
                sub.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype(np.float32))
    kernel = classifier.fc.kernel
    classifier.fc.kernel.assign(rng.normal(0, 0.05, kernel.shape).astype(np.float32))
    # Centre the logits on smooth random images: otherwise the features' common component
    # makes a random model predict one class for every input.
    probe = tf.image.resize(rng.uniform(0, 1, (64, 4, 4, 3)).astype(np.float32), (32, 32))
    logits = classifier(probe, training=False, branch="adv").numpy()
    classifier.fc.bias.assign((classifier.fc.bias.numpy() - logits.mean(0)).astype(np.float32))
    return classifier


EPS = 8 / 255


def two_class_problem(n=300, seed=0, eps=EPS):
    """A 2-class linear model on 2x2 images in [0.2, 0.8] and its exact robust set.

    Score s = w.x + c decides class 1 (s > 0). Under an L-inf budget eps that never hits the
    [0, 1] box, the worst case moves s by eps * ||w||_1, so an example of class 1 is robust iff
    s - eps||w||_1 > 0 and one of class 0 iff s + eps||w||_1 < 0. Examples within 10% of the
    threshold are dropped so that a finite PGD reaches the verdict without doubt.
    """
    rng = np.random.default_rng(seed)
    w = rng.normal(size=12).astype(np.float32)
    c = -0.5 * w.sum()
    weights = np.zeros([12, 2], np.float32)
    weights[:, 1] = w
    biases = np.array([0.0, c], np.float32)
    x = rng.uniform(0.2, 0.8, size=(n, 2, 2, 3)).astype(np.float32)
    y = rng.integers(0, 2, size=n).astype(np.int64)
    s = x.reshape(n, -1).astype(np.float64) @ w + c
    signed = np.where(y == 1, s, -s)           # margin of the true class
    budget = eps * np.abs(w).sum()
    keep = np.abs(np.abs(signed) - budget) > 0.1 * budget
    model = LinearClassifier({"adv": weights, "normal": weights},
                             {"adv": biases, "normal": biases})
    return model, x[keep], y[keep], signed[keep], budget
