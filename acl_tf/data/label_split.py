"""The label split of semi-supervised training (reference section 4): a class-balanced
validation hold-out of the training split, then a class-balanced labelled subset of the rest;
every other image is unlabelled.

The validation hold-out is the one :func:`acl_tf.data.train_val_split` makes for the same seed
(so fine-tuning and semi-supervised runs of a seed validate on the same images).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np

from acl_tf.core.errors import ConfigError
from acl_tf.data.sources import class_balanced_indices


@dataclasses.dataclass
class LabelSplit:
    """Sorted index arrays into the training split: disjoint, together covering it."""

    labelled: np.ndarray
    unlabelled: np.ndarray
    validation: np.ndarray

    def masks(self, size: int):
        """``(is_labelled, is_validation)`` boolean arrays of length ``size``."""
        is_labelled = np.zeros(size, bool)
        is_validation = np.zeros(size, bool)
        is_labelled[self.labelled] = True
        is_validation[self.validation] = True
        return is_labelled, is_validation


def labels_per_class_for(label_fraction: float, pool_size: int, num_classes: int) -> int:
    """Images per class of a labelled subset holding ``label_fraction`` of ``pool_size`` images:
    ``round(label_fraction * pool_size / num_classes)`` (halves up), at least 1."""
    if not 0.0 < label_fraction <= 1.0:
        raise ConfigError(f"label_fraction must be in (0, 1], got {label_fraction}.")
    return max(1, int(math.floor(label_fraction * pool_size / num_classes + 0.5)))


def label_split(labels, *, num_classes: int, val_size: int,
                label_fraction: Optional[float] = None, labels_per_class: Optional[int] = None,
                seed: int = 0) -> LabelSplit:
    """Deterministic class-balanced split into labelled, unlabelled and validation indices.

    The validation hold-out is ``val_size / num_classes`` random images per class (exactly
    :func:`acl_tf.data.train_val_split`'s for the same seed). From the remaining pool, the
    labelled subset takes the same number of images from every class: ``labels_per_class``, or
    :func:`labels_per_class_for` ``(label_fraction, pool size)``. Exactly one of the two is given.

    Raises:
        ConfigError: bad arguments; :class:`acl_tf.data.DataError` when a class has too few
            images for the request.
    """
    labels = np.asarray(labels)
    if (label_fraction is None) == (labels_per_class is None):
        raise ConfigError("pass exactly one of label_fraction and labels_per_class")
    if val_size < 0 or val_size % num_classes:
        raise ConfigError(f"val_size must be a non-negative multiple of num_classes="
                          f"{num_classes}, got {val_size}")
    validation = class_balanced_indices(labels, per_class=val_size // num_classes,
                                        num_classes=num_classes, seed=seed)
    if labels_per_class is None:
        labels_per_class = labels_per_class_for(label_fraction, len(labels) - len(validation),
                                                num_classes)
    if labels_per_class < 1:
        raise ConfigError(f"labels_per_class must be >= 1, got {labels_per_class}")
    # A seed stream of its own, so that the labelled draw does not mirror the validation draw.
    labelled = class_balanced_indices(
        labels, per_class=labels_per_class, num_classes=num_classes,
        seed=int(np.random.SeedSequence([seed, 1]).generate_state(1)[0]), exclude=validation)
    rest = np.ones(len(labels), bool)
    rest[validation] = False
    rest[labelled] = False
    return LabelSplit(labelled=labelled, unlabelled=np.flatnonzero(rest).astype(np.int64),
                      validation=validation)


def config_split(config, labels) -> LabelSplit:
    """:func:`label_split` with the settings of ``config`` (a
    :class:`acl_tf.configs.SemisupConfig`)."""
    return label_split(labels, num_classes=config.data.num_classes, val_size=config.val_size,
                       label_fraction=config.label_fraction,
                       labels_per_class=config.labels_per_class, seed=config.seed)
