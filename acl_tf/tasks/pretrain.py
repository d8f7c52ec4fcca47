"""Runs ACL pre-training from a :class:`acl_tf.configs.PretrainConfig` into a run directory.

Besides what :func:`acl_tf.tasks.fit.fit_epochs` writes, the run directory receives
``encoder.keras``: the trained encoder with both BN branches (the projection head is dropped, as
fine-tuning does), and ``pretrainer.keras``: encoder + head.

Under a ``tf.distribute`` strategy (``strategy=`` a strategy or its name, see
:func:`acl_tf.distribute.make_strategy`) the model and optimiser are built in its scope and
``batch_size`` is the global batch, split evenly over the replicas; in a multi-worker job only the
chief writes the run directory.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from acl_tf import data as data_lib
from acl_tf import distribute
from acl_tf.configs import ConfigError, PretrainConfig
from acl_tf.core import run_dir as rd
from acl_tf.data.augment import make_pretrain_dataset
from acl_tf.models import ProjectionHead, build_encoder, set_synchronized_bn
from acl_tf.optimizers import build_pretrain_optimizer
from acl_tf.tasks.fit import fit_epochs, prepare_run_dir, save_keras_atomic
from acl_tf.trainers.pretrainer import ACLPretrainer


def build_pretrainer(config: PretrainConfig) -> ACLPretrainer:
    """Encoder + head + variant, not yet compiled (build it inside the strategy's scope)."""
    dual = config.dual_bn
    encoder = build_encoder(config.model.arch, config.model.width, dual_bn=dual,
                            sync_bn=config.model.sync_bn,
                            normalization=config.model.normalization)
    head = ProjectionHead(config.model.head_dim, config.model.head_dim,
                          num_layers=config.model.head_layers, dual_bn=dual, name="head")
    if config.model.sync_bn:
        set_synchronized_bn(head)
    model = ACLPretrainer(encoder, head, variant=config.variant, temperature=config.temperature,
                          attack=config.attack, ds_alpha=config.ds_alpha,
                          ds_average=config.ds_average, seed=config.seed)
    size = config.data.image_size
    model(np.zeros((2, size, size, 3), np.float32), training=False)  # create the weights
    return model


def load_training_images(config) -> data_lib.ImageData:
    """The training split named by ``config.data`` (first ``limit`` images)."""
    return data_lib.load_split(config.data, config.data.train_split, config.data.limit)


@rd.cleanup_on_failure()
def run_pretraining(config: PretrainConfig, model_dir, resume: bool = False,
                    callbacks: Sequence[keras.callbacks.Callback] = (), verbose="auto",
                    strategy=None):
    """Pre-trains, checkpointing every epoch; returns (pretrainer, history).

    ``strategy``: a ``tf.distribute.Strategy``, or a name for
    :func:`acl_tf.distribute.make_strategy`; ``None`` is the current (default) strategy.
    """
    strategy = distribute.resolve_strategy(strategy)
    replicas = strategy.num_replicas_in_sync
    distribute.check_global_batch(strategy, config.batch_size)
    chief = distribute.is_chief(strategy)
    model_dir = prepare_run_dir(model_dir, config, resume, write=chief)
    keras.utils.set_random_seed(config.seed)
    train = load_training_images(config)
    steps = len(train) // config.batch_size
    if steps == 0:
        raise ConfigError(f"batch_size {config.batch_size} exceeds the {len(train)} training "
                          "images; lower batch_size or raise data.limit.")
    logging.info("pre-training %s on %d images (%d steps/epoch), %s width %d, %s BN%s, "
                 "%d replica(s)", config.variant, len(train), steps, config.model.arch,
                 config.model.width, "dual" if config.dual_bn else "single",
                 " (synchronised)" if config.model.sync_bn else "", replicas)
    with strategy.scope():
        model = build_pretrainer(config)
        model.compile(optimizer=build_pretrain_optimizer(config.optimizer, config.batch_size, steps,
                                                config.epochs))

    options = tf.data.Options()
    # The arrays are in memory (no files to shard): every worker takes its part of each batch.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA

    def make_dataset(epoch):
        return make_pretrain_dataset(train.images, train.labels, batch_size=config.batch_size,
                                     config=config.augment, seed=config.seed,
                                     epoch=epoch).with_options(options)

    with distribute.task_write_dir(model_dir, strategy) as write_dir:
        history = fit_epochs(model, make_dataset, model_dir=write_dir, resume_dir=model_dir,
                             epochs=config.epochs, steps_per_epoch=steps,
                             images_per_step=config.batch_size,
                             log_every=config.log_every_steps,
                             keep_checkpoints=config.keep_checkpoints, resume=resume,
                             callbacks=callbacks, verbose=verbose)
        save_keras_atomic(model.encoder, write_dir / rd.ENCODER)
        save_keras_atomic(model, write_dir / rd.PRETRAINER)
    return model, history
