"""k-NN accuracy of saved pre-trained encoders, on each BN branch: how good the features are
before any fine-tuning (used to read the reproduction study's ordering).

    .venv/bin/python experiments/encoder_knn.py --data=/path/to/cifar10 \
        --study_dir=runs/study_cifar10_cpu --train_limit=5000 --test_limit=2000 \
        --output=docs/study/knn

Reads ``STUDY_DIR/pretrain/*/encoder.keras`` (every finished pre-training) plus a random-init
encoder of the same width, and measures weighted k-NN (k=200, T=0.1) accuracy of the frozen
features of a class-balanced subset of ``test_limit`` test images (the subset fine-tuning's
``test_limit`` takes, so a test split sorted by class is fine) against the first
``train_limit`` training images. ``--data`` is required: a directory of CIFAR-10 TFRecords
(``train.tfrecord``, ``test.tfrecord`` in the format of acl_tf/data/sample/cifar10/README.md) or
a TFDS name such as ``cifar10`` (prepared locally). Writes ``OUTPUT.json`` and ``OUTPUT.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import keras
import numpy as np

from acl_tf import data as data_lib
from acl_tf.evaluation.knn import knn_accuracy
from acl_tf.models import build_encoder
from acl_tf.tasks.encoders import encoder_spec


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study_dir", default="runs/study_cifar10_cpu")
    parser.add_argument("--data", required=True,
                        help="CIFAR-10: a directory of TFRecords (train.tfrecord, test.tfrecord; "
                        "format: acl_tf/data/sample/cifar10/README.md) or a prepared "
                        "TFDS name such as cifar10")
    parser.add_argument("--train_limit", type=int, default=5000)
    parser.add_argument("--test_limit", type=int, default=2000)
    parser.add_argument("--output", default="docs/study/knn")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    train = data_lib.load(args.data, "train", limit=args.train_limit)
    test = data_lib.load(args.data, "test")
    test = test.take(data_lib.class_balanced_indices(
        test.labels, per_class=args.test_limit // test.num_classes,
        num_classes=test.num_classes, seed=0))
    encoders = {}
    for path in sorted(Path(args.study_dir).glob("pretrain/*/encoder.keras")):
        encoders[path.parent.name] = keras.saving.load_model(path, compile=False)
    if not encoders:
        raise SystemExit(f"No encoder.keras under {args.study_dir}/pretrain/.")
    width = encoder_spec(next(Path(args.study_dir).glob("pretrain/*/encoder.keras")))["width"]
    keras.utils.set_random_seed(args.seed)
    random_init = build_encoder("resnet18", width, dual_bn=False)
    random_init(np.zeros((1, 32, 32, 3), np.float32))
    encoders = {"random init": random_init, **encoders}

    rows = []
    for name, encoder in encoders.items():
        branches = ("normal", "adv") if getattr(encoder, "dual_bn", False) else ("normal",)
        for branch in branches:
            acc = knn_accuracy(encoder, train, test, branch=branch)
            rows.append({"encoder": name, "branch": branch if len(branches) == 2 else "single",
                         "knn_accuracy": acc})
            print(f"{name:16s} {rows[-1]['branch']:7s} k-NN accuracy {acc:.4f}", flush=True)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"settings": vars(args), "rows": rows},
                                                   indent=1) + "\n")
    lines = [f"k-NN (k=200, T=0.1) accuracy of the frozen encoders: {len(test)} test images "
             f"(class-balanced) against {args.train_limit} training images.", "",
             "| encoder | BN | k-NN accuracy (%) |", "|---|---|---:|"]
    lines += [f"| {r['encoder']} | {r['branch']} | {100 * r['knn_accuracy']:.2f} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
