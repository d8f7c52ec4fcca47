"""Robustness evaluation command line.

    python -m acl_tf.evaluate --model=runs/aff --data=data/cifar10_sample \\
        --attacks=clean,pgd20,autoattack --output=runs/aff/eval/report.json
    python -m acl_tf.evaluate --model=runs/aff/best.keras --data=data/cifar10_sample --limit=50 \\
        --attacks=clean,pgd20 --bn=normal --eps_sweep=0,4,8,16,64 --output=/tmp/eval/report.json
    python -m acl_tf.evaluate --model=runs/aff --attacks=corruptions \\
        --cifar10c_data_dir=~/tensorflow_datasets --output=runs/aff/eval_c/report.json

``--model`` is a fine-tuning run directory (its ``best.keras`` is evaluated) or a ``.keras`` file
holding an ``acl_tf.models.Classifier``. ``--attacks`` lists ``clean``, ``pgdK`` (PGD with K
steps; eps/step from the config, 8/255 and 2/255 by default), ``autoattack`` and
``corruptions`` (CIFAR-10-C). ``--eps_sweep`` gives the epsilons (in 1/255) of the
accuracy-vs-epsilon curve (empty: none). Every other setting comes from ``--config`` (a file in
``configs/evaluate/``) and ``--set=field.sub=value`` overrides, e.g.
``--set=autoattack.square_queries=1000``.

Writes ``--output`` (JSON: settings, versions, attacks as run, accuracies, gradient-masking
checks), ``report.md`` beside it and ``accuracy_vs_epsilon.png``.
"""

from __future__ import annotations

import json

from absl import flags

from acl_tf.cli.common import run
from acl_tf.core.errors import ConfigError

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("model", None, "Run directory with best.keras, or a .keras Classifier file.")
    flags.DEFINE_string("data", None, "Data source for acl_tf.data.load (TFRecord file/dir/glob or "
                        "TFDS name); default: the config's data.source.")
    flags.DEFINE_string("split", None, "Split to evaluate (default: the config's data.test_split).")
    flags.DEFINE_integer("limit", None, "Evaluate only the first N images of the split, in file "
                         "order (CIFAR-10's test TFRecord is sorted by class: its first 1,000 "
                         "images are all class 0).")
    flags.DEFINE_enum("bn", None, ["adv", "normal"], "BN branch (default: the classifier's own).")
    flags.DEFINE_list("attacks", None, "Comma list of clean, pgdK, autoattack, corruptions.")
    flags.DEFINE_string("output", None, "Path of the JSON report (report.md and the plot go beside).")
    flags.DEFINE_string("config", "default", "Config name under configs/evaluate/ or a path.")
    flags.DEFINE_multi_string("set", [], "Config override field.sub=value (repeatable).")
    flags.DEFINE_list("eps_sweep", None, "Epsilons (x 1/255) of the accuracy-vs-epsilon sweep; an "
                      "empty value disables it.")
    flags.DEFINE_string("cifar10c_data_dir", None, "TFDS data_dir holding cifar10_corrupted.")
    flags.DEFINE_bool("cifar10c_download", None, "Let TFDS download CIFAR-10-C (needs its host).")
    flags.DEFINE_string("data_dir", None, "TFDS data_dir for --data (TFDS names only).")
    flags.DEFINE_integer("batch_size", None, "Images per attack batch.")
    flags.DEFINE_integer("restarts", None, "PGD restarts (an example must survive all).")
    flags.DEFINE_integer("seed", None, "Seed of the attacks' random starts.")
    flags.mark_flag_as_required("model")
    flags.mark_flag_as_required("output")


def flag_overrides() -> list[str]:
    """The command-line flags as ``field=value`` config overrides (JSON values parse as YAML)."""
    pairs = {
        "data.source": FLAGS.data, "data.test_split": FLAGS.split, "data.limit": FLAGS.limit,
        "data.data_dir": FLAGS.data_dir, "bn": FLAGS.bn,
        "attacks": [a.strip() for a in FLAGS.attacks if a.strip()] if FLAGS.attacks else None,
        "cifar10c.data_dir": FLAGS.cifar10c_data_dir,
        "cifar10c.download": FLAGS.cifar10c_download, "batch_size": FLAGS.batch_size,
        "restarts": FLAGS.restarts, "seed": FLAGS.seed,
    }
    overrides = [f"{k}={json.dumps(v)}" for k, v in pairs.items() if v is not None]
    if FLAGS.eps_sweep is not None:
        try:
            sweep = [float(e) for e in FLAGS.eps_sweep if e.strip()]
        except ValueError:
            raise ConfigError(f"--eps_sweep must be numbers (x 1/255), got {FLAGS.eps_sweep}") \
                from None
        overrides.append(f"eps_sweep_255={json.dumps(sweep)}")
    return overrides


def main(argv):
    del argv
    from acl_tf.configs import EvaluateConfig, load_config
    from acl_tf.tasks.evaluate import evaluate

    config = load_config(EvaluateConfig, "evaluate", FLAGS.config,
                         flag_overrides() + list(FLAGS.set))
    report, files = evaluate(FLAGS.model, FLAGS.output, config)
    for line, (name, acc) in zip(report["attacks_run"], report["accuracies"].items()):
        print(f"{name:>14s}: {100 * acc:6.2f}%   {line}")
    for g in report["guards"]:
        print(f"check {g['name']}: {g['status']}: {g['message']}")
    print("wrote " + ", ".join(files.values()))


if __name__ == "__main__":
    run(define_flags, main)
