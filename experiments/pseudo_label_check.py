"""Pseudo-label accuracy with and without ACL pre-training (the diagnostic of paper Table 2).

Runs steps ii and the pseudo-labelling of semi-supervised adversarial training
(``acl_tf.tasks.semisup``) at a CPU scale: the first ``--train_limit`` training images of
``--data`` (required: a directory of CIFAR-10 TFRecords, ``train.tfrecord`` and ``test.tfrecord``
in the format of acl_tf/data/sample/cifar10/README.md, or a TFDS name such as ``cifar10``,
prepared locally; a class-balanced ``--val_size`` hold-out, then 1% and 10% of the rest
labelled), a width-``--width`` ResNet-18, the teacher trained from either a DS pre-trained
encoder (``normal`` BN) or random initialisation (vanilla UAT++). Reports the
pseudo-label accuracy over all training images (the paper's figure: 86.73% with ACL against
37.67% without, at 1% of the full CIFAR-10) and the teacher's clean accuracy on the whole test
split. Without ``--pretrained`` a DS encoder is first pre-trained here for
``--pretrain_epochs`` epochs on the same images (the settings of experiments/knn_check.py).
Resumable: rerun the same command (finished runs are read back from
``RUN_DIR/pseudo_label_check_row.json``); ``--arms`` runs a subset.

    .venv/bin/python experiments/pseudo_label_check.py --data=/path/to/cifar10 \\
        --train_limit=5000 --width=16 --pretrained=runs/knn_check/ds --teacher_epochs=40 \\
        --output=docs/pseudo_label_check

writes docs/pseudo_label_check.json and docs/pseudo_label_check.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import keras
import tensorflow as tf
from absl import logging

from acl_tf.configs import PretrainConfig, SemisupConfig, load_config
from acl_tf.tasks.pretrain import run_pretraining
from acl_tf.tasks.semisup import run_semisup

NAMES = {"acl": "ACL DS", "none": "none (vanilla UAT++)"}


def pretrain_ds(args) -> Path:
    """A short DS pre-training run on the experiment's images (the settings of
    experiments/knn_check.py); returns its directory."""
    config = load_config(PretrainConfig, "pretrain", None, [
        "variant=ds", f"data.source={args.data}", f"data.limit={args.train_limit}",
        f"model.width={args.width}", "model.head_dim=128", f"batch_size={args.pretrain_batch}",
        f"epochs={args.pretrain_epochs}", f"optimizer.learning_rate={args.pretrain_lr}",
        "optimizer.reference_batch_size=0", "optimizer.warmup_epochs=1", f"seed={args.seed}",
        "log_every_steps=5"])
    run_dir = Path(args.run_root) / "ds_pretrain"
    if not (run_dir / "encoder.keras").exists():
        run_pretraining(config, run_dir, resume=(run_dir / "config.json").exists(), verbose=2)
    return run_dir


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True,
                        help="CIFAR-10: a directory of TFRecords (train.tfrecord, test.tfrecord; "
                        "format: acl_tf/data/sample/cifar10/README.md) or a prepared "
                        "TFDS name such as cifar10")
    parser.add_argument("--train_limit", type=int, default=5000)
    parser.add_argument("--val_size", type=int, default=500)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--fractions", default="0.01,0.1")
    parser.add_argument("--arms", default="acl,none",
                        help="acl (from the DS encoder) and/or none (random init)")
    parser.add_argument("--pretrained", default=None,
                        help="DS pre-training run dir or encoder .keras (default: pre-train one)")
    parser.add_argument("--pretrain_epochs", type=int, default=3)
    parser.add_argument("--pretrain_batch", type=int, default=256)
    parser.add_argument("--pretrain_lr", type=float, default=2.0)
    parser.add_argument("--teacher_epochs", type=int, default=40)
    parser.add_argument("--teacher_decay", default="25,35")
    parser.add_argument("--teacher_batch", type=int, default=64)
    parser.add_argument("--run_root", default="runs/pseudo_label_check")
    parser.add_argument("--output", default="docs/pseudo_label_check")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.set_verbosity(logging.INFO)

    arms = args.arms.split(",")
    start = time.time()
    pretrained = args.pretrained
    if "acl" in arms and not pretrained:
        pretrained = str(pretrain_ds(args))
    pretrain_seconds = time.time() - start
    results = {"settings": {**vars(args), "pretrained": pretrained},
               "pretrain_seconds": pretrain_seconds,
               "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                            "python": platform.python_version()},
               "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared)",
               "rows": []}
    for fraction in [float(f) for f in args.fractions.split(",")]:
        for tag in ("acl", "none"):
            if tag not in arms:
                continue
            encoder = pretrained if tag == "acl" else None
            overrides = [f"data.source={args.data}", f"data.limit={args.train_limit}",
                         f"val_size={args.val_size}", f"label_fraction={fraction}",
                         f"model.width={args.width}", f"teacher.epochs={args.teacher_epochs}",
                         f"teacher.optimizer.decay_epochs=[{args.teacher_decay}]",
                         f"teacher.batch_size={args.teacher_batch}", f"seed={args.seed}",
                         "log_every_steps=10", f"pretrained={encoder or 'null'}"]
            config = load_config(SemisupConfig, "semisup", "cifar10_paper", overrides)
            run_dir = Path(args.run_root) / f"{tag}_{fraction:g}"
            done = run_dir / "pseudo_label_check_row.json"
            if done.exists():    # finished by an earlier invocation
                results["rows"].append({**json.loads(done.read_text()), "pre-training": NAMES[tag]})
                continue
            began = time.time()
            resume = (run_dir / "teacher" / "config.json").exists()
            run_semisup(config, run_dir, step="teacher", resume=resume, verbose=2)
            summary = run_semisup(config, run_dir, step="pseudo_label", verbose=2)
            row = {"pre-training": NAMES[tag], "label_fraction": fraction,
                   "num_labelled": summary["num_labelled"],
                   "pseudo_label_accuracy": summary["pseudo_label_accuracy"],
                   "pseudo_label_accuracy_unlabelled":
                       summary["pseudo_label_accuracy_unlabelled"],
                   "teacher_val_accuracy": summary["teacher_val_accuracy"],
                   "teacher_test_accuracy": summary["teacher_test_accuracy"],
                   "teacher_best_epoch": summary["teacher_best_epoch"],
                   "pretrained": encoder, "seconds": time.time() - began,
                   "run_dir": str(run_dir)}
            done.write_text(json.dumps(row, indent=1) + "\n")
            results["rows"].append(row)
            print(json.dumps(row), flush=True)

    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| labels | pre-training | labelled images | pseudo-label accuracy (all "
             f"{args.train_limit} training images) | on the unlabelled | teacher test accuracy "
             "(whole test split) | wall time (s) |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {100 * r['label_fraction']:g}% | {r['pre-training']} | {r['num_labelled']} | "
              f"{100 * r['pseudo_label_accuracy']:.2f}% | "
              f"{100 * r['pseudo_label_accuracy_unlabelled']:.2f}% | "
              f"{100 * r['teacher_test_accuracy']:.2f}% | {r['seconds']:.0f} |"
              for r in results["rows"]]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
