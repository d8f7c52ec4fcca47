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
