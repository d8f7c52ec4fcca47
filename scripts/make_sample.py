#!/usr/bin/env python
"""Builds the small CIFAR-10 sample shipped in ``acl_tf/data/sample/cifar10/``.

All images come from a CIFAR-10 *test* TFRecord (``--source``).  A
class-balanced random subset is picked deterministically from ``--seed``:
``--train-per-class`` images per class for the sample's ``train.tfrecord``
and ``--test-per-class`` different images per class for its
``test.tfrecord``.  The serialized ``tf.train.Example`` records are copied
byte for byte (the original JPEG bytes are not re-encoded).  The source file
is sorted by class, so records are written in a seeded class-interleaved
order: every prefix of ``k * num_classes`` records holds ``k`` images per
class.  Files are written atomically (temporary name, then rename).

Usage (from the project root)::

    .venv/bin/python scripts/make_sample.py
    .venv/bin/python scripts/make_sample.py --source PATH --out-dir DIR \\
        --train-per-class 50 --test-per-class 20 --seed 0
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from acl_tf.data import class_balanced_indices  # noqa: E402

DEFAULT_OUT = ROOT / "acl_tf/data/sample/cifar10"


def read_records(path: str):
    """Returns the serialized records of a TFRecord file and their labels."""
    records, labels = [], []
    for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
        example = tf.train.Example.FromString(raw)
        records.append(raw)
        labels.append(example.features.feature["label"].int64_list.value[0])
    return records, np.asarray(labels, dtype=np.int64)


def interleave(indices, labels, num_classes: int, seed: int) -> list:
    """Orders ``indices`` round-robin over classes (shuffled within each class and round)."""
    rng = np.random.default_rng(seed)
    per_class = [list(rng.permutation(indices[labels[indices] == c])) for c in range(num_classes)]
    order = []
    for _ in range(max(len(p) for p in per_class)):
        for c in rng.permutation(num_classes):
            if per_class[c]:
                order.append(int(per_class[c].pop()))
    return order


def write_records(path: Path, records) -> None:
    """Writes serialized records to ``path`` atomically."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with tf.io.TFRecordWriter(tmp) as writer:
            for raw in records:
                writer.write(raw)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True,
                        help="CIFAR-10 test TFRecord to sample from")
    parser.add_argument("--out-dir", default=str(DEFAULT_OUT),
                        help="output directory (default: %(default)s)")
    parser.add_argument("--train-per-class", type=int, default=50,
                        help="images per class in train.tfrecord (default: %(default)s)")
    parser.add_argument("--test-per-class", type=int, default=20,
                        help="images per class in test.tfrecord (default: %(default)s)")
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="selection seed (default: %(default)s)")
    args = parser.parse_args(argv)

    records, labels = read_records(args.source)
    train_idx = class_balanced_indices(labels, per_class=args.train_per_class,
                                       num_classes=args.num_classes, seed=args.seed)
    test_idx = class_balanced_indices(labels, per_class=args.test_per_class,
                                      num_classes=args.num_classes, seed=args.seed + 1,
                                      exclude=train_idx)
    assert not set(train_idx) & set(test_idx)

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, idx in (("train", train_idx), ("test", test_idx)):
        path = out / f"{name}.tfrecord"
        order = interleave(idx, labels, args.num_classes, args.seed)
        write_records(path, [records[i] for i in order])
        print(f"wrote {path}: {len(idx)} records, {path.stat().st_size} bytes, "
              f"per class {np.bincount(labels[idx], minlength=args.num_classes).tolist()}")


if __name__ == "__main__":
    main()
