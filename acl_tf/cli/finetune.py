"""Supervised fine-tuning (AFF / ALF / SLF) of a pre-trained encoder (``--model``) into a run
directory (``--model_dir``).

    acl-tf finetune --config=cifar10_paper --model=runs/ds --mode=aff --bn=adv \\
        --model_dir=runs/ds_aff
    acl-tf finetune --config=smoke --mode=aff --model_dir=/tmp/ri_aff   # random init
    acl-tf finetune --model_dir=runs/ds_aff --resume                    # after a crash

(``python -m acl_tf.finetune`` runs the same.) ``--config`` is a preset name (see
``acl_tf/configs/presets/finetune/``) or a YAML/JSON path; every field can be overridden with
``--set=field.subfield=value`` (repeatable; ``--set=attack.epsilon=8/255``). ``--model`` is the
``--model_dir`` of a pre-training run (its ``encoder.keras`` is loaded; the projection head is
dropped) or an encoder ``.keras`` file; without it the encoder is randomly initialised. The
encoder's architecture and width come from the saved encoder. On ``--resume`` the run's own
``config.json`` is the starting point. ``--pretrained`` is the deprecated name of ``--model``.

``--strategy`` picks the ``tf.distribute`` strategy (``default``, ``mirrored``, ``multi_worker``
with the cluster in ``TF_CONFIG``, or ``tpu`` with ``--tpu=ADDRESS``); ``batch_size`` stays the
global batch (with ``--set=drop_remainder=true`` on several replicas). ``--sync_bn``
(= ``--set=model.sync_bn=true``) synchronises BN statistics across replicas. See
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

FLAGS = flags.FLAGS


def define_flags():
    define_run_flags("finetune", "cifar10_paper", "config, checkpoints, logs, best.keras, "
                     "last.keras, metrics.json, saved_model/")
    define_strategy_flags()
    from acl_tf.configs import BRANCHES, FINETUNE_MODES

    flags.DEFINE_string("model", None, "The pre-trained encoder this command reads: a "
                        "pre-training run directory holding encoder.keras, or a .keras encoder "
                        "file. Omit for a randomly initialised encoder.")
    define_alias("pretrained", "model")
    define_enum("mode", None, FINETUNE_MODES, "aff (TRADES, everything trained), alf "
                "(adversarial linear) or slf (standard linear); default: the config's.")
    define_enum("bn", None, BRANCHES, "BN branch of the dual-BN encoder (default: the "
                "config's).")


def resolve_config(config_name, overrides, mode, bn, pretrained, model_dir, resume,
                   sync_bn=None):
    """The run's config: named config (or the saved one on resume) + overrides + flags, with the
    model section taken from the pre-trained encoder (explicit model.* overrides must agree);
    ``sync_bn`` (when not None) sets ``model.sync_bn``."""
    from acl_tf.configs import FinetuneConfig, load_run_config
    from acl_tf.tasks.encoders import use_pretrained

    explicit = list(overrides)
    overrides = list(overrides)
    overrides += [f"mode={mode}"] if mode else []
    overrides += [f"bn={bn}"] if bn else []
    overrides += [f"model.sync_bn={str(bool(sync_bn)).lower()}"] if sync_bn is not None else []
    config = load_run_config(FinetuneConfig, "finetune", config_name, overrides, model_dir, resume)
    return use_pretrained(config, pretrained, explicit)


def main(argv):
    del argv
    from acl_tf.distribute import is_chief, make_strategy
    from acl_tf.tasks.finetune import run_finetuning

    # First: multi-worker and TPU strategies must exist before TensorFlow runs any op.
    strategy = make_strategy(FLAGS.strategy, tpu_address=FLAGS.tpu)
    config = resolve_config(FLAGS.config, FLAGS.set, FLAGS.mode, FLAGS.bn, FLAGS.model,
                            FLAGS.model_dir, FLAGS.resume, sync_bn=FLAGS.sync_bn)
    _, metrics = run_finetuning(config, FLAGS.model_dir, resume=FLAGS.resume,
                                strategy=strategy)
    best = metrics["best"]
    summary = (f"best epoch {best['epoch']}: validation accuracy {best['val_acc']:.4f}, "
               f"robust {best['val_adv_acc']:.4f}")
    if "test" in metrics:
        summary += (f"; test accuracy {metrics['test']['acc']:.4f}, robust "
                    f"{metrics['test']['adv_acc']:.4f}")
    if is_chief(strategy):
        logging.info("done: %s (%s)", summary, Path(FLAGS.model_dir) / run_dir.BEST)
        print(summary)


if __name__ == "__main__":
    run(define_flags, main)
