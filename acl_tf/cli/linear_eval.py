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

from acl_tf.cli.common import define_run_flags, run
from acl_tf.core import run_dir

FLAGS = flags.FLAGS


def define_flags():
    define_run_flags("finetune", "cifar10_paper", "one sub-directory per protocol, "
                     "linear_separability.json/.md; --resume reuses finished runs")
    flags.DEFINE_string("pretrained", None, "Pre-training run directory holding encoder.keras.")
    flags.mark_flag_as_required("pretrained")


def main(argv):
    del argv
    from acl_tf.configs import FinetuneConfig, load_config
    from acl_tf.tasks.linear_eval import run_linear_separability

    config = load_config(FinetuneConfig, "finetune", FLAGS.config, FLAGS.set)
    run_linear_separability(config, FLAGS.model_dir, pretrained=FLAGS.pretrained,
                            resume=FLAGS.resume)
    table = Path(FLAGS.model_dir) / run_dir.LINEAR_TABLE
    print(table.read_text())


if __name__ == "__main__":
    run(define_flags, main)
