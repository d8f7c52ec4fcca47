"""Linear separability (paper Table 5): SLF and ALF with each BN branch on the frozen encoder
``--model``, into ``--model_dir``.

    acl-tf linear_eval --model=runs/ds --config=cifar10_paper --model_dir=runs/ds_linear
    acl-tf linear_eval --model=runs/smoke_ds --config=smoke --model_dir=/tmp/linear

(``python -m acl_tf.linear_eval`` runs the same.) ``--config`` is a fine-tuning preset name (see
``acl_tf/configs/presets/finetune/``) or a YAML/JSON path. ``--pretrained`` is the deprecated
name of ``--model``.

Runs four fine-tuning runs on the frozen encoder (OUT = ``--model_dir``: ``OUT/slf_adv``,
``OUT/slf_normal``,
``OUT/alf_adv``, ``OUT/alf_normal``) and writes ``OUT/linear_separability.json`` and
``OUT/linear_separability.md`` with the test TA and RA (PGD-20) of each run's best model.
``--set`` overrides apply to every run (``mode`` and ``bn`` are set per run).
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from acl_tf.cli.common import define_alias, define_run_flags, mark_required, run
from acl_tf.core import run_dir

FLAGS = flags.FLAGS


def define_flags():
    define_run_flags("finetune", "cifar10_paper", "one sub-directory per protocol, "
                     "linear_separability.json/.md; --resume reuses finished runs")
    flags.DEFINE_string("model", None, "The pre-trained encoder this command reads: a "
                        "pre-training run directory holding encoder.keras (or a .keras encoder "
                        "file). Required.")
    define_alias("pretrained", "model")
    mark_required("model")


def main(argv):
    del argv
    from acl_tf.configs import FinetuneConfig, load_config
    from acl_tf.tasks.linear_eval import run_linear_separability

    config = load_config(FinetuneConfig, "finetune", FLAGS.config, FLAGS.set)
    run_linear_separability(config, FLAGS.model_dir, pretrained=FLAGS.model,
                            resume=FLAGS.resume)
    table = Path(FLAGS.model_dir) / run_dir.LINEAR_TABLE
    print(table.read_text())


if __name__ == "__main__":
    run(define_flags, main)
