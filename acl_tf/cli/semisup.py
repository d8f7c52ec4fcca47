"""Semi-supervised adversarial training from few labels (reference section 4, paper Table 2).

    acl-tf semisup --config=cifar10_paper --model=runs/ds --label_fraction=0.01 \\
        --model_dir=runs/ds_semi_1pct                        # teacher, pseudo-labels, student
    acl-tf semisup --config=cifar10_paper --label_fraction=0.01 \\
        --model_dir=runs/uat_1pct                            # no pre-training: vanilla UAT++
    acl-tf semisup --model_dir=runs/ds_semi_1pct --step=student   # one step alone
    acl-tf semisup --model_dir=runs/ds_semi_1pct --resume         # after a crash

(``python -m acl_tf.semisup`` runs the same.) ``--model`` is the pre-trained encoder (a
pre-training run directory or an encoder ``.keras`` file; ``--pretrained`` is its deprecated
name), ``--model_dir`` the run directory written (OUT below).

``--step``: ``all`` (default), ``teacher`` (step ii: standard training on the labelled subset,
``normal`` BN), ``pseudo_label`` (soft labels of every training image -> ``OUT/pseudo_labels.npz``,
and their accuracy) or ``student`` (step iii: adversarial training on all images, ``adv`` BN;
exported to ``OUT/student/saved_model/``). A step run alone reads the previous step's output in
``--model_dir`` (or ``--teacher`` / ``--pseudo_labels``) and, unless ``--config`` is given, the
config saved there. ``--config`` is a preset name (see ``acl_tf/configs/presets/semisup/``) or a
YAML/JSON path; ``--set=field.sub=value`` overrides any field. ``OUT/metrics.json`` collects the
figures.

``--strategy`` (``default``, ``mirrored``, ``multi_worker`` with the cluster in ``TF_CONFIG``,
``tpu`` with ``--tpu=ADDRESS``) and ``--sync_bn`` work as for ``acl-tf finetune``: the teacher's
and the student's batch sizes are global batches split over the replicas. See
docs/distributed.md.
"""

from __future__ import annotations

from pathlib import Path

from absl import flags, logging

from acl_tf.cli.common import (
    define_alias,
    define_enum,
    define_run_flags,
    define_strategy_flags,
    run,
)
from acl_tf.core import run_dir
from acl_tf.core.errors import ConfigError

FLAGS = flags.FLAGS


def define_flags():
    define_run_flags("semisup", "cifar10_paper", "config.json, teacher/, pseudo_labels.npz, "
                     "student/, metrics.json; with --resume and --step=all, finished steps are "
                     "skipped")
    define_strategy_flags()
    from acl_tf.configs import SEMISUP_STEPS

    flags.DEFINE_string("model", None, "The pre-trained encoder this command reads: a "
                        "pre-training run directory holding encoder.keras (or a .keras encoder "
                        "file). Omit for random initialisation (vanilla UAT++).")
    define_alias("pretrained", "model")
    flags.DEFINE_float("label_fraction", None, "Fraction of the (non-validation) training images "
                       "that keep their label, class-balanced (default: the config's).")
    flags.DEFINE_integer("labels_per_class", None, "Labelled images per class (instead of "
                         "--label_fraction).")
    define_enum("step", "all", SEMISUP_STEPS,
                "Which step to run; a single step reads the previous one's output.")
    flags.DEFINE_string("teacher", None, "--step=pseudo_label: teacher classifier .keras file "
                        "(default: MODEL_DIR/teacher/best.keras).")
    flags.DEFINE_string("pseudo_labels", None, "--step=student: pseudo-label .npz file (default: "
                        "MODEL_DIR/pseudo_labels.npz).")


def resolve_config(config_name, overrides, *, pretrained=None, label_fraction=None,
                   labels_per_class=None, model_dir, use_saved=False, align=True):
    """The run's config: the named config (or ``MODEL_DIR/config.json`` when ``use_saved`` and it
    exists) + overrides + flags, with the model section taken from the pre-trained encoder
    (explicit ``model.*`` overrides must agree with it) when ``align``."""
    import dataclasses

    from acl_tf.configs import SemisupConfig, load_run_config
    from acl_tf.tasks.encoders import use_pretrained

    if label_fraction is not None and labels_per_class is not None:
        raise ConfigError("Pass --label_fraction or --labels_per_class, not both.")
    explicit = list(overrides)
    overrides = list(overrides)
    if label_fraction is not None:
        overrides += [f"label_fraction={label_fraction}", "labels_per_class=null"]
    if labels_per_class is not None:
        overrides += [f"labels_per_class={labels_per_class}", "label_fraction=null"]
    config = load_run_config(SemisupConfig, "semisup", config_name, overrides, model_dir,
                             resume=use_saved)
    if not align:
        return dataclasses.replace(config, pretrained=pretrained) if pretrained else config
    return use_pretrained(config, pretrained, explicit)


def main(argv):
    del argv
    from acl_tf.distribute import is_chief, make_strategy
    from acl_tf.tasks.semisup import run_semisup

    use_saved = FLAGS.resume or (FLAGS.step != "all" and not FLAGS["config"].present)
    overrides = list(FLAGS.set)
    if FLAGS.sync_bn is not None:
        overrides.append(f"model.sync_bn={str(FLAGS.sync_bn).lower()}")
    # First: multi-worker and TPU strategies must exist before TensorFlow runs any op.
    strategy = make_strategy(FLAGS.strategy, tpu_address=FLAGS.tpu)
    config = resolve_config(FLAGS.config, overrides, pretrained=FLAGS.model,
                            label_fraction=FLAGS.label_fraction,
                            labels_per_class=FLAGS.labels_per_class,
                            model_dir=FLAGS.model_dir, use_saved=use_saved,
                            align=FLAGS.step != "pseudo_label")
    summary = run_semisup(config, FLAGS.model_dir, step=FLAGS.step, resume=FLAGS.resume,
                          teacher=FLAGS.teacher, pseudo_labels=FLAGS.pseudo_labels,
                          strategy=strategy)
    parts = []
    for key, label in (("teacher_test_accuracy", "teacher test accuracy"),
                       ("pseudo_label_accuracy", "pseudo-label accuracy (all training images)"),
                       ("student_test_accuracy", "student test accuracy"),
                       ("student_test_robust_accuracy",
                        f"student test {summary.get('robust_attack', 'PGD')} accuracy")):
        if key in summary:
            parts.append(f"{label} {summary[key]:.4f}")
    line = "; ".join(parts) or "nothing measured"
    if is_chief(strategy):
        logging.info("done: %s (%s)", line, Path(FLAGS.model_dir) / run_dir.METRICS)
        print(line)


if __name__ == "__main__":
    run(define_flags, main)
