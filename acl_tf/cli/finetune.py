"""Supervised fine-tuning command line (AFF / ALF / SLF).

    python -m acl_tf.finetune --config=cifar10_paper --pretrained=runs/ds --mode=aff --bn=adv \\
        --model_dir=runs/ds_aff
    python -m acl_tf.finetune --config=smoke --mode=aff --model_dir=/tmp/ri_aff   # random init
    python -m acl_tf.finetune --model_dir=runs/ds_aff --resume                    # after a crash

``--config`` names a file in ``configs/finetune/`` (or is a path to a YAML/JSON file); every field
can be overridden with ``--set=field.subfield=value`` (repeatable). ``--pretrained`` is the
``--model_dir`` of a pre-training run (its ``encoder.keras`` is loaded; the projection head is
dropped); without it the encoder is randomly initialised. The encoder's architecture and width
come from the saved encoder. On ``--resume`` the run's own ``config.json`` is the starting point.

``--strategy`` picks the ``tf.distribute`` strategy (``default``, ``mirrored``, ``multi_worker``
with the cluster in ``TF_CONFIG``, or ``tpu`` with ``--tpu=ADDRESS``); ``batch_size`` stays the
global batch (with ``--set=drop_remainder=true`` on several replicas). ``--sync_bn``
(= ``--set=model.sync_bn=true``) synchronises BN statistics across replicas. See
docs/distributed.md.
"""

from __future__ import annotations

from pathlib import Path

from absl import flags, logging

from acl_tf.cli.common import define_run_flags, define_strategy_flags, run
from acl_tf.core import run_dir

FLAGS = flags.FLAGS


def define_flags():
    define_run_flags("finetune", "cifar10_paper", "config, checkpoints, logs, best.keras, "
                     "last.keras, metrics.json, saved_model/")
    define_strategy_flags()
    flags.DEFINE_string("pretrained", None, "Pre-training run directory holding encoder.keras "
                        "(or a .keras encoder file). Omit for a randomly initialised encoder.")
    flags.DEFINE_string("mode", None, "aff (TRADES, everything trained), alf (adversarial linear) "
                        "or slf (standard linear); default: the config's.")
    flags.DEFINE_string("bn", None, "BN branch of the dual-BN encoder: adv or normal "
                        "(default: the config's).")


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
    config = resolve_config(FLAGS.config, FLAGS.set, FLAGS.mode, FLAGS.bn, FLAGS.pretrained,
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
