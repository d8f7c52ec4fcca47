"""Does the study's robust-accuracy ordering survive a stronger attack?

    .venv/bin/python experiments/attack_strength.py --data=/path/to/cifar10 \
        --runs=runs/study_cifar10_cpu/aff/ri,runs/study_cifar10_cpu/aff/ds \
        --test_limit=1000 --output=docs/study/attack_strength

``--data`` is required: a directory of CIFAR-10 TFRecords (``test.tfrecord`` in the format of
acl_tf/data/sample/cifar10/README.md) or a TFDS name such as ``cifar10`` (prepared locally).

Evaluates each fine-tuning run's ``best.keras`` on a class-balanced subset of the test split
(the one fine-tuning's ``test_limit`` takes) with PGD-20 (the study's attack), PGD-100, PGD-20
with 5 random restarts (an image counts as robust only if every restart fails) and PGD-20 at
eps 64/255 (should be near 0: no gradient masking). Writes ``OUTPUT.json`` and ``OUTPUT.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import keras

import acl_tf.models  # noqa: F401 (registers the classes the .keras files name)
from acl_tf import data as data_lib
from acl_tf.attacks import PGDConfig
from acl_tf.evaluation.robustness import clean_accuracy, pgd_accuracy

ATTACKS = {"PGD-20": (PGDConfig(steps=20), 1), "PGD-100": (PGDConfig(steps=100), 1),
           "PGD-20 x 5 restarts": (PGDConfig(steps=20), 5),
           "PGD-20, eps 64/255": (PGDConfig(steps=20, epsilon=64 / 255, step_size=8 / 255), 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", required=True, help="comma-separated fine-tuning run dirs")
    parser.add_argument("--data", required=True,
                        help="CIFAR-10: a directory of TFRecords (train.tfrecord, test.tfrecord; "
                        "format: acl_tf/data/sample/cifar10/README.md) or a prepared "
                        "TFDS name such as cifar10")
    parser.add_argument("--test_limit", type=int, default=1000)
    parser.add_argument("--output", default="docs/study/attack_strength")
    args = parser.parse_args()

    test = data_lib.load(args.data, "test")
    test = test.take(data_lib.class_balanced_indices(
        test.labels, per_class=args.test_limit // test.num_classes,
        num_classes=test.num_classes, seed=0))
    x = test.to_float()
    rows = []
    for run in args.runs.split(","):
        model = keras.saving.load_model(Path(run) / "best.keras", compile=False)
        row = {"run": run, "clean": clean_accuracy(model, x, test.labels).accuracy}
        for name, (config, restarts) in ATTACKS.items():
            row[name] = pgd_accuracy(model, x, test.labels, config, restarts=restarts,
                                     batch_size=250).accuracy
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(
        {"settings": vars(args), "attacks": {k: [dataclasses.asdict(c), r]
                                             for k, (c, r) in ATTACKS.items()},
         "rows": rows}, indent=1) + "\n")
    names = ["clean", *ATTACKS]
    lines = [f"Accuracy (%) of each run's best.keras on {len(test)} class-balanced test images.",
             "", "| run | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [f"| {r['run']} | " + " | ".join(f"{100 * r[n]:.2f}" for n in names) + " |"
              for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
