"""ACL pre-training (and DynACL, AIR): writes a run directory (``--model_dir``) whose encoder the
other commands read as ``--model``.

    acl-tf pretrain --variant=ds --config=smoke --model_dir=runs/smoke_ds
    acl-tf pretrain --config=cifar10_dynacl --model_dir=runs/dynacl
    acl-tf pretrain --config=cifar10_dynacl_air --model_dir=runs/dynacl_air
    acl-tf pretrain --config=smoke --method=dynacl_air --set=air.lambda1=1 --model_dir=runs/x
    acl-tf pretrain --config=cifar10_resnet18 --model_dir=runs/ds --set=epochs=200
    acl-tf pretrain --model_dir=runs/ds --resume                 # continue after a crash
    acl-tf pretrain --config=cifar10_resnet18 --model_dir=runs/ds \\
        --strategy=mirrored --sync_bn                           # all GPUs of this machine

(``python -m acl_tf.pretrain`` runs the same.) ``--config`` is a preset name (see
``acl_tf/configs/presets/pretrain/``) or a YAML/JSON path; every field can be overridden with
``--set=field.subfield=value`` (repeatable; ``--set=attack.epsilon=8/255``). On ``--resume`` the
run's own ``config.json`` is the starting point.

``--strategy`` picks the ``tf.distribute`` strategy (``default``, ``mirrored``, ``multi_worker``
with the cluster in ``TF_CONFIG``, or ``tpu`` with ``--tpu=ADDRESS``); ``batch_size`` stays the
global batch. ``--sync_bn`` (= ``--set=model.sync_bn=true``) synchronises BN statistics across
replicas. See docs/distributed.md.
"""

from __future__ import annotations

from pathlib import Path

from absl import flags, logging

from acl_tf.cli.common import define_enum, define_run_flags, define_strategy_flags, run
from acl_tf.core import run_dir

FLAGS = flags.FLAGS


def define_flags():
    define_run_flags("pretrain", "cifar10_resnet18", "config, checkpoints, logs, encoder")
    define_strategy_flags()
    from acl_tf.configs import METHODS, VARIANTS

    define_enum("variant", None, VARIANTS, "ACL variant (default: the config's).")
    define_enum("method", None, METHODS, "Pre-training method (default: the config's): acl, "
                "dynacl (DynACL's annealed augmentation and stream weights), acl_air / "
                "dynacl_air (with AIR's regularisers); all but acl train the DS variant.")


def resolve_config(config_name, overrides, variant, model_dir, resume, sync_bn=None,
                   method=None):
    """The run's config: named config (or the saved one on resume) + overrides + variant and
    method (+ ``model.sync_bn`` when ``sync_bn`` is not None)."""
    from acl_tf.configs import PretrainConfig, load_run_config

    overrides = (list(overrides) + ([f"variant={variant}"] if variant else [])
                 + ([f"method={method}"] if method else []))
    if sync_bn is not None:
        overrides.append(f"model.sync_bn={str(bool(sync_bn)).lower()}")
    return load_run_config(PretrainConfig, "pretrain", config_name, overrides, model_dir, resume)


def main(argv):
    del argv
    # The config first: it needs no TensorFlow, so a bad one is reported at once.
    config = resolve_config(FLAGS.config, FLAGS.set, FLAGS.variant, FLAGS.model_dir,
                            FLAGS.resume, sync_bn=FLAGS.sync_bn, method=FLAGS.method)
    from acl_tf.distribute import is_chief, make_strategy
    from acl_tf.tasks.pretrain import run_pretraining

    # Then: multi-worker and TPU strategies must exist before TensorFlow runs any op.
    strategy = make_strategy(FLAGS.strategy, tpu_address=FLAGS.tpu)
    run_pretraining(config, FLAGS.model_dir, resume=FLAGS.resume, strategy=strategy)
    if is_chief(strategy):
        logging.info("done: encoder written to %s", Path(FLAGS.model_dir) / run_dir.ENCODER)


if __name__ == "__main__":
    run(define_flags, main)
