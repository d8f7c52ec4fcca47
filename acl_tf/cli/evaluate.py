"""Robustness evaluation of a fine-tuned classifier (``--model``) into a report (``--output``).

    acl-tf evaluate --model=runs/aff --data=sample:cifar10 \\
        --attacks=clean,pgd20,autoattack --output=runs/aff/eval/report.json
    acl-tf evaluate --model=runs/aff/best.keras --data=sample:cifar10 --limit=50 \\
        --attacks=clean,pgd20 --bn=normal --epsilon_sweep=0,4/255,8/255,16/255,64/255 \\
        --output=/tmp/eval/report.json
    acl-tf evaluate --model=runs/aff --attacks=corruptions \\
        --cifar10c_data_dir=~/tensorflow_datasets --output=runs/aff/eval_c/report.json

(``python -m acl_tf.evaluate`` runs the same.) ``--model`` is a fine-tuning run directory (its
``best.keras`` is evaluated) or a ``.keras`` file holding an ``acl_tf.models.Classifier``.
``--attacks`` lists ``clean``, ``pgdK`` (PGD with K steps; ``--epsilon`` and ``--step_size``,
8/255 and 2/255 by default), ``autoattack`` and ``corruptions`` (CIFAR-10-C). Epsilons are
fractions of the [0, 1] pixel range and may be written as ratios: ``--epsilon=8/255``.
``--epsilon_sweep`` gives the epsilons of the accuracy-vs-epsilon curve (empty: none).
``--limit=N`` evaluates N images of the split, class-balanced (N / num_classes of every class,
the images fine-tuning's ``test_limit=N`` tests on); ``--subset=first`` takes the first N in file
order instead (CIFAR-10's test TFRecord is sorted by class: its first 1,000 are all airplanes).
The report gives the number of images of each class. Every other setting comes from
``--config`` (a preset name, see ``acl_tf/configs/presets/evaluate/``, or a YAML/JSON path) and
``--set=field.sub=value`` overrides, e.g. ``--set=autoattack.square_queries=1000``.

Writes ``--output`` (JSON: settings, versions, images per class, attacks as run, accuracies,
gradient-masking checks), ``report.md`` beside it and ``accuracy_vs_epsilon.png``.
"""

from __future__ import annotations

import json

from absl import flags

from acl_tf.cli.common import (
    FractionListParser,
    config_help,
    define_alias,
    define_enum,
    define_fraction,
    define_fraction_list,
    define_list,
    mark_required,
    run,
)

FLAGS = flags.FLAGS


def _attack_name(text: str) -> str:
    from acl_tf.configs.evaluate import parse_attack_name

    parse_attack_name(text)           # a ConfigError (a ValueError) names the valid ones
    return text.strip().lower()


def _255(values) -> str:
    return ",".join(f"{v:g}/255" if v else "0" for v in values)


def define_flags():
    from acl_tf.configs import BRANCHES
    from acl_tf.configs.evaluate import LIMIT_SUBSETS

    flags.DEFINE_string("model", None, "The classifier this command reads: a fine-tuning run "
                        "directory with best.keras, or a .keras Classifier file. Required.")
    flags.DEFINE_string("output", None, "The report this command writes: a .json path "
                        "(report.md and the plot go beside it). Required.")
    flags.DEFINE_string("data", None, "Data source for acl_tf.data.load (sample:cifar10, "
                        "TFRecord file/dir/glob or TFDS name); default: the config's data.source.")
    flags.DEFINE_string("split", None, "Split to evaluate (default: the config's data.test_split).")
    flags.DEFINE_integer("limit", None, "Evaluate N images of the split (default: all, or the "
                         "config's data.limit), class-balanced unless --subset=first.",
                         lower_bound=1)
    define_enum("subset", None, LIMIT_SUBSETS, "Which --limit images: balanced (N/num_classes "
                "of every class, a deterministic draw) or first (the first N in file order); "
                "default: the config's (balanced).")
    define_enum("bn", None, BRANCHES, "BN branch (default: the classifier's own).")
    define_list("attacks", None, "Comma list of clean, pgdK (K >= 1 steps), autoattack, "
                "corruptions (default: the config's).", _attack_name)
    define_fraction("epsilon", None, "L-inf epsilon of pgdK and autoattack (default: the "
                    "config's attack.epsilon, 8/255).")
    define_fraction("step_size", None, "PGD step size (default: the config's attack.step_size, "
                    "2/255).")
    define_fraction_list("epsilon_sweep", None, "Epsilons of the accuracy-vs-epsilon sweep, e.g. "
                         "0,2/255,8/255; an empty value disables it (default: the config's "
                         "eps_sweep).")
    define_alias("eps_sweep", "epsilon_sweep", parser=FractionListParser(0, 255),
                 convert=lambda values: [v / 255 for v in values], spell=_255,
                 note=" (the old flag's values are in 1/255 units)")
    flags.DEFINE_string("config", "default", config_help("evaluate"))
    flags.DEFINE_multi_string("set", [], "Config override field.sub=value (repeatable); "
                              "fractions may be written as ratios, e.g. attack.epsilon=8/255")
    flags.DEFINE_string("cifar10c_data_dir", None, "TFDS data_dir holding cifar10_corrupted.")
    flags.DEFINE_bool("cifar10c_download", None, "Let TFDS download CIFAR-10-C (needs its host).")
    flags.DEFINE_string("data_dir", None, "TFDS data_dir for --data (TFDS names only).")
    flags.DEFINE_integer("batch_size", None, "Images per attack batch.", lower_bound=1)
    flags.DEFINE_integer("restarts", None, "PGD restarts (an example must survive all).",
                         lower_bound=1)
    flags.DEFINE_integer("seed", None, "Seed of the attacks' random starts.", lower_bound=0)
    mark_required("model", "output")


def flag_overrides() -> list[str]:
    """The command-line flags as ``field=value`` config overrides (JSON values parse as YAML)."""
    pairs = {
        "data.source": FLAGS.data, "data.test_split": FLAGS.split, "data.limit": FLAGS.limit,
        "subset": FLAGS.subset, "data.data_dir": FLAGS.data_dir, "bn": FLAGS.bn,
        "attacks": FLAGS.attacks or None, "attack.epsilon": FLAGS.epsilon,
        "attack.step_size": FLAGS.step_size,
        "cifar10c.data_dir": FLAGS.cifar10c_data_dir,
        "cifar10c.download": FLAGS.cifar10c_download, "batch_size": FLAGS.batch_size,
        "restarts": FLAGS.restarts, "seed": FLAGS.seed,
    }
    overrides = [f"{k}={json.dumps(v)}" for k, v in pairs.items() if v is not None]
    if FLAGS.epsilon_sweep is not None:
        # (clears a deprecated eps_sweep_255 of the config file, which would win otherwise)
        overrides += [f"eps_sweep={json.dumps(FLAGS.epsilon_sweep)}", "eps_sweep_255=null"]
    return overrides


def main(argv):
    del argv
    from acl_tf.configs import EvaluateConfig, load_config
    from acl_tf.evaluation.subset import summary_line
    from acl_tf.tasks.evaluate import evaluate

    config = load_config(EvaluateConfig, "evaluate", FLAGS.config,
                         flag_overrides() + list(FLAGS.set))
    report, files = evaluate(FLAGS.model, FLAGS.output, config)
    print(f"{report['data']['source']} [{report['data']['split']}]: "
          f"{summary_line(report['data'])}")
    for line, (name, acc) in zip(report["attacks_run"], report["accuracies"].items()):
        print(f"{name:>14s}: {100 * acc:6.2f}%   {line}")
    for g in report["guards"]:
        print(f"check {g['name']}: {g['status']}: {g['message']}")
    print("wrote " + ", ".join(files.values()))


if __name__ == "__main__":
    run(define_flags, main)
