"""Linear separability command line (paper Table 5): SLF and ALF with each BN branch.

    python -m acl_tf.linear_eval --pretrained=runs/ds --config=cifar10_paper --model_dir=runs/ds_linear
    python -m acl_tf.linear_eval --pretrained=runs/smoke_ds --config=smoke --model_dir=/tmp/linear

Runs four fine-tuning runs on the frozen encoder (``OUT/slf_adv``, ``OUT/slf_normal``,
``OUT/alf_adv``, ``OUT/alf_normal``) and writes ``OUT/linear_separability.json`` and
``OUT/linear_separability.md`` with the test TA and RA (PGD-20) of each run's best model.
``--set`` overrides apply to every run (``mode`` and ``bn`` are set per run).
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from acl_tf.cli.common import run

FLAGS = flags.FLAGS


def define_flags():
    """Defines the command-line flags (only when run as a program, so that importing this
    module, e.g. in tests or another command line, defines no global flags)."""
    flags.DEFINE_string("pretrained", None, "Pre-training run directory holding encoder.keras.")
    flags.DEFINE_string("config", "cifar10_paper", "Config name under configs/finetune/ or a path.")
    flags.DEFINE_string("model_dir", None, "Output directory (one sub-directory per run).")
    flags.DEFINE_bool("resume", False, "Resume (or reuse, if finished) the runs in --model_dir.")
    flags.DEFINE_multi_string("set", [], "Config override field.sub=value (repeatable).")
    flags.mark_flag_as_required("pretrained")
    flags.mark_flag_as_required("model_dir")


def main(argv):
    del argv
    from acl_tf.configs import FinetuneConfig, load_config
    from acl_tf.tasks.linear_eval import run_linear_separability

    config = load_config(FinetuneConfig, "finetune", FLAGS.config, FLAGS.set)
    run_linear_separability(config, FLAGS.model_dir, pretrained=FLAGS.pretrained,
                            resume=FLAGS.resume)
    table = Path(FLAGS.model_dir) / "linear_separability.md"
    print(table.read_text())


if __name__ == "__main__":
    run(define_flags, main)
