"""The semi-supervised student's batches: labelled and unlabelled images mixed in proportion to
the label rate (reference section 4), as dicts with the keys of
:data:`acl_tf.trainers.semisup.BATCH_KEYS`.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from acl_tf.core.errors import ConfigError
from acl_tf.data.augment import make_finetune_dataset


def student_batch_sizes(num_labelled: int, num_unlabelled: int, batch_size: int):
    """``(labelled per batch, unlabelled per batch, steps per epoch)`` of the student.

    A batch holds ``max(1, round(batch_size * rate))`` labelled images (rate = labelled share of
    the training images) and the rest unlabelled; an epoch is one pass over the unlabelled images
    (the labelled ones cycle at the same rate, each pass reshuffled).
    """
    if num_labelled < 1 or num_unlabelled < 1:
        raise ConfigError(f"The student needs labelled and unlabelled images, got "
                          f"{num_labelled} labelled and {num_unlabelled} unlabelled (for "
                          "fully supervised training use acl_tf.finetune).")
    if batch_size < 2:
        raise ConfigError(f"student.batch_size must be >= 2, got {batch_size}.")
    rate = num_labelled / (num_labelled + num_unlabelled)
    n_labelled = min(batch_size - 1, max(1, int(math.floor(batch_size * rate + 0.5))))
    n_unlabelled = batch_size - n_labelled
    return n_labelled, n_unlabelled, math.ceil(num_unlabelled / n_unlabelled)


def _index_stream(images, count: int, seed: int, epoch: int, augment: bool) -> tf.data.Dataset:
    """At least ``count`` unbatched ``(image, index)`` pairs: reshuffled passes over ``images``."""
    n = len(images)
    passes = max(1, math.ceil(count / n))
    stream = None
    for r in range(passes):
        part = make_finetune_dataset(images, np.arange(n, dtype=np.int64),
                                     batch_size=min(n, 512), seed=seed,
                                     epoch=epoch * passes + r, augment=augment).unbatch()
        stream = part if stream is None else stream.concatenate(part)
    return stream


def make_student_dataset(images, labels, targets, labelled, unlabelled, *, batch_size: int,
                         seed: int, epoch: int, augment: bool = True):
    """One student epoch: ``(dataset, steps)`` of dict batches for
    :class:`~acl_tf.trainers.semisup.SemisupStudent`.

    Args:
        images: uint8 [N, H, W, 3] training images; labels: int [N]; targets: float [N, C] soft
            pseudo-labels.
        labelled, unlabelled: index arrays into them.
        batch_size: images per batch (split by :func:`student_batch_sizes`).
        seed, epoch: the order and augmentation depend only on these (a resumed run sees the
            same data).
        augment: RandomCrop(32, padding=4) + horizontal flip.

    Each batch holds the labelled images first (``labels`` = their true labels,
    ``is_labelled`` True) then the unlabelled ones (``labels`` = -1: their true labels never
    reach training); ``targets`` are every image's soft pseudo-labels.
    """
    labelled, unlabelled = np.asarray(labelled), np.asarray(unlabelled)
    n_l, n_u, steps = student_batch_sizes(len(labelled), len(unlabelled), batch_size)
    lab_images, unl_images = images[labelled], images[unlabelled]
    lab_labels = tf.constant(np.asarray(labels)[labelled].astype(np.int64))
    lab_targets = tf.constant(np.asarray(targets)[labelled].astype(np.float32))
    unl_targets = tf.constant(np.asarray(targets)[unlabelled].astype(np.float32))
    lab = _index_stream(lab_images, n_l * steps, seed, epoch, augment).batch(
        n_l, drop_remainder=True)
    unl = _index_stream(unl_images, n_u * steps, seed + 1, epoch, augment).batch(
        n_u, drop_remainder=True)

    def combine(lab_batch, unl_batch):
        (x_l, i_l), (x_u, i_u) = lab_batch, unl_batch
        return {"images": tf.concat([x_l, x_u], axis=0),
                "labels": tf.concat([tf.gather(lab_labels, i_l),
                                     tf.fill([n_u], tf.constant(-1, tf.int64))], axis=0),
                "targets": tf.concat([tf.gather(lab_targets, i_l),
                                      tf.gather(unl_targets, i_u)], axis=0),
                "is_labelled": tf.concat([tf.ones([n_l], tf.bool), tf.zeros([n_u], tf.bool)],
                                         axis=0)}

    dataset = tf.data.Dataset.zip((lab, unl)).take(steps).map(
        combine, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE), steps
