"""Does pre-training learn? k-NN test accuracy of S2S / DS encoders against random init.

Pre-trains each variant on the first N training images of ``--data`` (required: a directory of
CIFAR-10 TFRecords, ``train.tfrecord`` and ``test.tfrecord`` in the format of
acl_tf/data/sample/cifar10/README.md, or a TFDS name such as ``cifar10``, prepared locally) with a
small-width ResNet-18, then measures weighted k-NN accuracy (k=200, T=0.1) of the frozen features
on the whole test split, for each BN branch. Resumable: rerun the same command after an
interruption.

    .venv/bin/python experiments/knn_check.py --data=/path/to/cifar10 --train_limit=5000 \
        --width=16 --epochs=s2s:15,ds:3,ds:6 --output=docs/knn_check

writes docs/knn_check.json and docs/knn_check.md.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from acl_tf import data as data_lib
from acl_tf.configs import PretrainConfig, load_config
from acl_tf.evaluation.knn import knn_accuracy
from acl_tf.models import build_encoder
from acl_tf.tasks.pretrain import run_pretraining


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True,
                        help="CIFAR-10: a directory of TFRecords (train.tfrecord, test.tfrecord; "
                        "format: acl_tf/data/sample/cifar10/README.md) or a prepared "
                        "TFDS name such as cifar10")
    parser.add_argument("--train_limit", type=int, default=5000)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--epochs", default="s2s:15,ds:6",
                        help="variant:epochs pairs, comma separated")
    parser.add_argument("--learning_rate", type=float, default=2.0)
    parser.add_argument("--run_root", default="runs/knn_check")
    parser.add_argument("--output", default="docs/knn_check")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.set_verbosity(logging.INFO)

    train = data_lib.load(args.data, "train", limit=args.train_limit)
    test = data_lib.load(args.data, "test")
    results = {"settings": vars(args), "versions": {"tensorflow": tf.__version__,
               "keras": keras.__version__, "python": platform.python_version()},
               "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPU cores",
               "rows": []}

    def record(name, encoder, seconds):
        for branch in ("normal", "adv"):
            acc = knn_accuracy(encoder, train, test, branch=branch)
            results["rows"].append({"model": name, "branch": branch, "knn_accuracy": acc,
                                    "pretrain_seconds": seconds})
            print(f"{name:28s} {branch:6s} k-NN accuracy {acc:.4f}", flush=True)

    keras.utils.set_random_seed(args.seed)
    random_encoder = build_encoder("resnet18", args.width, dual_bn=True)
    random_encoder(np.zeros((1, 32, 32, 3), np.float32))
    record("random init", random_encoder, 0.0)

    for item in args.epochs.split(","):
        variant, epochs = item.split(":")
        config = load_config(PretrainConfig, "pretrain", None, [
            f"variant={variant}", f"data.source={args.data}", f"data.limit={args.train_limit}",
            f"model.width={args.width}", "model.head_dim=128", f"batch_size={args.batch_size}",
            f"epochs={epochs}", f"optimizer.learning_rate={args.learning_rate}",
            "optimizer.reference_batch_size=0", "optimizer.warmup_epochs=1",
            f"seed={args.seed}", "log_every_steps=10"])
        run_dir = Path(args.run_root) / f"{variant}_{epochs}ep"
        model, history = run_pretraining(config, run_dir,
                                         resume=(run_dir / "config.json").exists(), verbose=2)
        # Training time from the per-epoch throughput, so a resumed run reports all of it.
        images = len(train) // args.batch_size * args.batch_size
        seconds = sum(images / h["images_per_sec"] for h in history)
        record(f"{variant.upper()} ({epochs} epochs)", model.encoder, seconds)

    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| encoder | BN branch | k-NN test accuracy | pre-training time (s) |",
             "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['branch']} | {100 * r['knn_accuracy']:.2f}% | "
              f"{r['pretrain_seconds']:.0f} |" for r in results["rows"]]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
