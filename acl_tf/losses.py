"""Contrastive and adversarial-training losses.

Every function takes logits / projections and returns a scalar that is the mean over the
*local* batch; under ``tf.distribute`` the caller divides by the number of replicas.
"""

from __future__ import annotations

import tensorflow as tf


def nt_xent(z_a, z_b, temperature: float = 0.5, return_accuracy: bool = False):
    """NT-Xent (SimCLR) loss over the 2B views of B images.

    ``z_a[i]`` and ``z_b[i]`` are projections of two views of image i. Every one of the 2B views is
    an anchor whose positive is the other view of its image and whose negatives are the other
    2B - 2 views; cosine similarities are divided by ``temperature``; the loss is the mean
    cross-entropy over the 2B anchors.

    Args:
        z_a, z_b: float tensors [B, D] (need not be normalised).
        temperature: softmax temperature (0.5 in ACL).
        return_accuracy: also return the positive-pair top-1 accuracy (the fraction of anchors
            whose most similar other view is their positive).

    Returns:
        The scalar loss (float32), or ``(loss, accuracy)``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")
    z = tf.concat([z_a, z_b], axis=0)
    z = tf.math.l2_normalize(tf.cast(z, tf.float32), axis=1)
    n = tf.shape(z)[0]
    batch = n // 2
    logits = tf.matmul(z, z, transpose_b=True) / temperature
    # An anchor is never its own negative: push self-similarity to -inf (large negative).
    logits = logits - tf.eye(n, dtype=logits.dtype) * 1e9
    positives = tf.concat([tf.range(batch, n), tf.range(0, batch)], axis=0)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(positives, logits))
    if not return_accuracy:
        return loss
    hits = tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), positives)
    return loss, tf.reduce_mean(tf.cast(hits, tf.float32))
