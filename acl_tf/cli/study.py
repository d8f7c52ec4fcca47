"""The studies, each a set of ordinary runs in one directory (``--model_dir``): the reproduction
study (the paper's Tables 3, 4, 5 and Fig. 3) or the comparison of ACL's successors (ACL, DynACL,
DynACL-AIR and their "++" post-processing), at a chosen scale.

    acl-tf study --config=cifar10_cpu --model_dir=runs/study --report_dir=docs/study
    acl-tf study --config=smoke --model_dir=/tmp/study             # seconds-scale demo
    acl-tf study --config=cifar10_cpu --model_dir=runs/study --report_only
    acl-tf study --config=methods_cpu --model_dir=runs/methods --report_dir=docs/methods
    acl-tf study --config=methods_smoke --model_dir=/tmp/methods   # seconds-scale demo

(``python -m acl_tf.study`` runs the same; ``--study_dir`` is the deprecated name of
``--model_dir``.) ``--config`` is a preset name (see ``acl_tf/configs/presets/study/``) or a
YAML/JSON path; a config that lists ``methods`` is a comparison of methods
(:class:`~acl_tf.configs.MethodsStudyConfig`), any other the reproduction study
(:class:`~acl_tf.configs.StudyConfig`).

The reproduction study pre-trains every variant with the same budget, fine-tunes each (and a
random-init model) with AFF, runs the linear protocols and the BN ablation (see
:mod:`acl_tf.studies.reproduction`); ``--report_dir`` (default ``--model_dir``) receives
``study.md``, ``study.json``, ``ra_per_epoch.png`` and ``ta_ra.png`` after every run. The
comparison pre-trains (and post-processes) every method with the same budget and fine-tunes each
alike (see :mod:`acl_tf.studies.methods`); its report is ``methods.md``, ``study.json`` and
``methods_ta_ra.png``. Rerunning the same command continues an interrupted study: finished runs
are skipped, the interrupted one resumes from its last checkpoint.
"""

from __future__ import annotations

from absl import flags, logging

from acl_tf.cli.common import config_help, define_alias, mark_required, run

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("config", "cifar10_cpu", config_help("study"))
    flags.DEFINE_string("model_dir", None, "The directory this command writes: the study's runs, "
                        "one run directory per stage. Required.")
    define_alias("study_dir", "model_dir")
    flags.DEFINE_string("report_dir", None, "Where the tables and plots go (default: "
                        "--model_dir).")
    flags.DEFINE_bool("report_only", False, "Only re-render the report from the finished runs.")
    flags.DEFINE_multi_string("set", [], "Study config override field=value (repeatable).")
    mark_required("model_dir")


def main(argv):
    del argv
    from acl_tf.configs import MethodsStudyConfig, load_study_config

    logging.set_verbosity(logging.INFO)
    config = load_study_config(FLAGS.config, FLAGS.set)   # (no TensorFlow yet)
    if isinstance(config, MethodsStudyConfig):
        from acl_tf.studies import methods as study
    else:
        from acl_tf.studies import reproduction as study

    if FLAGS.report_only:
        study.write_report(config, FLAGS.model_dir, FLAGS.report_dir or FLAGS.model_dir)
    else:
        study.run_study(config, FLAGS.model_dir, FLAGS.report_dir)
    from pathlib import Path

    print((Path(FLAGS.report_dir or FLAGS.model_dir) / study.MARKDOWN).read_text())


if __name__ == "__main__":
    run(define_flags, main)
