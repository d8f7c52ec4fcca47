"""Linear separability command line (paper Table 5): SLF and ALF with each BN branch.

    python -m acl_tf.linear_eval --pretrained=runs/ds --config=cifar10_paper --model_dir=runs/ds_linear
    python -m acl_tf.linear_eval --pretrained=runs/smoke_ds --config=smoke --model_dir=/tmp/linear

Runs four fine-tuning runs on the frozen encoder (``OUT/slf_adv``, ``OUT/slf_normal``,
``OUT/alf_adv``, ``OUT/alf_normal``) and writes ``OUT/linear_separability.json`` and
``OUT/linear_separability.md`` with the test TA and RA (PGD-20) of each run's best model.
``--set`` overrides apply to every run (``mode`` and ``bn`` are set per run).
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags, logging

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
    from acl_tf.config import ConfigError, FinetuneConfig, load_config
    from acl_tf.data import DataError
    from acl_tf.export import ExportError
    from acl_tf.training.linear_separability import run_linear_separability
    from acl_tf.training.loop import NonFiniteLossError, RunDirError

    try:
        config = load_config(FinetuneConfig, "finetune", FLAGS.config, FLAGS.set)
        run_linear_separability(config, FLAGS.model_dir, pretrained=FLAGS.pretrained,
                                resume=FLAGS.resume)
    except (ConfigError, DataError, ExportError, RunDirError, NonFiniteLossError) as err:
        logging.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    table = Path(FLAGS.model_dir) / "linear_separability.md"
    print(table.read_text())


if __name__ == "__main__":
    define_flags()
    app.run(main)
