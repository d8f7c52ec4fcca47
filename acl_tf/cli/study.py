"""Reproduction study command line: the paper's Tables 3, 4, 5 and Fig. 3 at a chosen scale.

    python -m acl_tf.study --config=cifar10_cpu --study_dir=runs/study --report_dir=docs/study
    python -m acl_tf.study --config=smoke --study_dir=/tmp/study             # seconds-scale demo
    python -m acl_tf.study --config=cifar10_cpu --study_dir=runs/study --report_only

Pre-trains every variant with the same budget, fine-tunes each (and a random-init model) with AFF,
runs the linear protocols and the BN ablation (see :mod:`acl_tf.studies.reproduction`). Rerunning the
same command continues an interrupted study: finished runs are skipped, the interrupted one
resumes from its last checkpoint. ``--report_dir`` (default ``--study_dir``) receives
``study.md``, ``study.json``, ``ra_per_epoch.png`` and ``ta_ra.png`` after every run.
"""

from __future__ import annotations

from absl import flags, logging

from acl_tf.cli.common import run

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("config", "cifar10_cpu", "Study config name under configs/study/ or a path.")
    flags.DEFINE_string("study_dir", None, "Directory of the study's runs (one per stage).")
    flags.DEFINE_string("report_dir", None, "Where the tables and plots go (default: study_dir).")
    flags.DEFINE_bool("report_only", False, "Only re-render the report from the finished runs.")
    flags.DEFINE_multi_string("set", [], "Study config override field=value (repeatable).")
    flags.mark_flag_as_required("study_dir")


def main(argv):
    del argv
    from acl_tf.configs import StudyConfig, load_config
    from acl_tf.studies import reproduction as study

    logging.set_verbosity(logging.INFO)
    config = load_config(StudyConfig, "study", FLAGS.config, FLAGS.set)
    if FLAGS.report_only:
        study.write_report(config, FLAGS.study_dir, FLAGS.report_dir or FLAGS.study_dir)
    else:
        study.run_study(config, FLAGS.study_dir, FLAGS.report_dir)
    from pathlib import Path

    print((Path(FLAGS.report_dir or FLAGS.study_dir) / "study.md").read_text())


if __name__ == "__main__":
    run(define_flags, main)
