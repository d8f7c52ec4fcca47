"""Which images a limited evaluation measures: ``--limit`` N of a split, class-balanced by default.

A file's first N images can be far from a fair sample: CIFAR-10's test TFRecord is sorted by
class, so its first 1,000 images are all airplanes. :func:`limit_images` therefore draws
``N // num_classes`` images of every class with :func:`acl_tf.data.class_balanced_indices`, seed
0: for N a multiple of the class count these are exactly the images a fine-tuning run with
``test_limit=N`` tests on. A remainder ``N % num_classes`` goes one image each to classes drawn
at random (from the same seed). ``subset="first"`` keeps the first N in file order. Either way
the report says how many images of each class were measured (:func:`class_counts`).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from acl_tf.core.errors import ConfigError, DataError

__all__ = ["SUBSETS", "balanced_indices", "class_counts", "describe_subset", "limit_images",
           "load_limited", "summary_line"]

SUBSETS = ("balanced", "first")


def class_counts(labels, num_classes: int) -> list[int]:
    """Images per class, ``[count of class 0, count of class 1, ...]``."""
    labels = np.asarray(labels, dtype=np.int64)
    return [int(c) for c in np.bincount(labels, minlength=num_classes)[:num_classes]]


def balanced_indices(labels, limit: int, num_classes: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``limit`` images, ``limit // num_classes`` of every class (the draw of
    :func:`acl_tf.data.class_balanced_indices`) plus one more of each of ``limit % num_classes``
    classes drawn at random; all images when ``limit`` is not smaller than their number.

    Raises:
        DataError: a class has fewer than ``limit // num_classes`` images.
    """
    from acl_tf.data import class_balanced_indices

    labels = np.asarray(labels, dtype=np.int64)
    if limit >= len(labels):
        return np.arange(len(labels), dtype=np.int64)
    per_class, extra = divmod(int(limit), num_classes)
    try:
        base = class_balanced_indices(labels, per_class=per_class, num_classes=num_classes,
                                      seed=seed)
    except DataError as err:    # a class with too few images
        counts = class_counts(labels, num_classes)
        raise DataError(f"a class-balanced subset of {limit} images needs {per_class} of each "
                        f"of the {num_classes} classes, but the split has {counts} per class "
                        f"({err}); lower the limit, or take the first {limit} images in file "
                        "order (subset 'first')") from None
    if not extra:
        return base
    # The remainder: one more image of each of `extra` classes, drawn at random (a class with no
    # image left is passed over; with too few such classes, the round goes on).
    rng = np.random.default_rng([seed, 1])
    unused = np.ones(len(labels), bool)
    unused[base] = False
    spare = {c: list(rng.permutation(np.flatnonzero(unused & (labels == c))))
             for c in range(num_classes)}
    chosen = []
    order = [int(c) for c in rng.permutation(num_classes)]
    while len(chosen) < extra:
        for c in order:
            if spare[c] and len(chosen) < extra:
                chosen.append(spare[c].pop())
    return np.sort(np.concatenate([base, np.asarray(chosen, np.int64)]))


def limit_images(data, limit: Optional[int], subset: str = "balanced", seed: int = 0):
    """``data`` (an :class:`acl_tf.data.ImageData`) cut to ``limit`` images: a class-balanced
    subset (``subset="balanced"``) or the first ``limit`` (``"first"``); all of it for None."""
    subset = str(subset).strip().lower()
    if subset not in SUBSETS:
        raise ConfigError(f"Unknown subset {subset!r}; expected one of {SUBSETS}.")
    if limit is None or limit >= len(data):
        return data
    if subset == "first":
        return data.take(np.arange(limit))
    return data.take(balanced_indices(data.labels, limit, data.num_classes, seed=seed))


def load_limited(source, split: str, limit: Optional[int], subset: str = "balanced", *,
                 seed: int = 0, **load_kwargs):
    """:func:`acl_tf.data.load` of ``split`` cut by :func:`limit_images` (``subset="first"``
    reads only the first ``limit`` images)."""
    from acl_tf.data import load

    if str(subset).strip().lower() == "first":
        return load(source, split, limit=limit, **load_kwargs)
    return limit_images(load(source, split, **load_kwargs), limit, subset, seed=seed)


def describe_subset(data, limit: Optional[int], subset: str) -> dict:
    """The report's account of the images measured: how they were picked and how many of each
    class (``class_counts[c]``: images of class c)."""
    return {"limit": limit, "subset": subset if limit is not None else "all",
            "class_counts": class_counts(data.labels, data.num_classes)}


def summary_line(info: dict) -> str:
    """``200 images (class-balanced subset, limit 200): 20 per class`` or with the counts listed
    (``0:31 1:28 ...``) when they differ."""
    counts = info["class_counts"]
    how = {"balanced": f"class-balanced subset, limit {info['limit']}",
           "first": f"first {info['limit']} in file order", "all": "all"}[info["subset"]]
    if len(set(counts)) == 1:
        per = f"{counts[0]} per class"
    else:
        per = "per class " + " ".join(f"{c}:{n}" for c, n in enumerate(counts))
    return f"{sum(counts)} images ({how}): {per}"
