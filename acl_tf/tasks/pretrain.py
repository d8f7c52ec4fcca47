"""Runs ACL pre-training from a :class:`acl_tf.configs.PretrainConfig` into a run directory.

Besides what :func:`acl_tf.tasks.fit.fit_epochs` writes, the run directory receives
``encoder.keras``: the trained encoder with both BN branches (the projection head is dropped, as
fine-tuning does; with DynACL's momentum encoder, the key encoder), and ``pretrainer.keras``:
encoder + head.

The dynamic methods (DynACL, DynACL-AIR) build every epoch's dataset at that epoch's augmentation
strength and set the stream weights at the start of every epoch (:class:`StreamSchedule`), both
from the epoch index alone, so a resumed run trains exactly as an uninterrupted one; the history
records ``aug_strength``, ``clean_weight`` and ``adv_weight`` per epoch.

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
from acl_tf.models.resnet import LAYOUT_VERSION
from acl_tf.optimizers import build_pretrain_optimizer
from acl_tf.tasks.checkpoint import run_layout
from acl_tf.tasks.fit import fit_epochs, prepare_run_dir, save_keras_atomic
from acl_tf.trainers.pretrainer import ACLPretrainer


def build_pretrainer(config: PretrainConfig, layout_version=None) -> ACLPretrainer:
    """Encoder + head + variant, not yet compiled (build it inside the strategy's scope).
    ``layout_version``: the encoder's layout (:mod:`acl_tf.models.resnet`), default the
    current one; a resumed run is rebuilt in the layout it was trained in."""
    dual = config.dual_bn
    layout = {} if layout_version is None else {"layout_version": layout_version}
    encoder = build_encoder(config.model.arch, config.model.width, dual_bn=dual,
                            sync_bn=config.model.sync_bn,
                            normalization=config.model.normalization, **layout)
    head = ProjectionHead(config.model.head_dim, config.model.head_dim,
                          num_layers=config.model.head_layers, dual_bn=dual, name="head")
    if config.model.sync_bn:
        set_synchronized_bn(head)
    model = ACLPretrainer(encoder, head, variant=config.variant, temperature=config.temperature,
                          attack=config.attack, ds_alpha=config.ds_alpha,
                          ds_average=config.ds_average, seed=config.seed,
                          dynamic_weights=config.dynamic_schedules,
                          air=config.air if config.uses_air else None,
                          momentum=config.dynamic.momentum if config.momentum_encoder else None)
    size = config.data.image_size
    images = np.zeros((2, size, size, 3), np.float32)
    model(images, training=False)  # create the weights
    model.build_key_encoder(images)
    if config.model.sync_bn and config.momentum_encoder:
        set_synchronized_bn(model.encoder_k)
        set_synchronized_bn(model.head_k)
    return model


class StreamSchedule(keras.callbacks.Callback):
    """DynACL's stream weights: sets ``model.stream_weights`` at the start of every epoch from
    :meth:`PretrainConfig.stream_weights` (halved with ``ds_average``) and adds the epoch's
    ``aug_strength``, ``clean_weight`` and ``adv_weight`` to its logs."""

    def __init__(self, config: PretrainConfig):
        super().__init__()
        self.config = config

    def values(self, epoch: int) -> dict:
        """The schedule's values of (0-based) ``epoch``."""
        scale = 0.5 if self.config.ds_average else 1.0
        clean, adv = self.config.stream_weights(epoch + 1)
        return {"aug_strength": self.config.dynamic.strength(epoch + 1, self.config.epochs),
                "clean_weight": scale * clean, "adv_weight": scale * adv}

    def on_epoch_begin(self, epoch, logs=None):
        values = self.values(epoch)
        self.model.stream_weights.assign([values["clean_weight"], values["adv_weight"]])
        logging.info("epoch %d: augmentation strength %.4f, stream weights clean %.4f adv %.4f",
                     epoch + 1, values["aug_strength"], values["clean_weight"],
                     values["adv_weight"])

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.values(epoch))


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
    logging.info("pre-training %s (%s) on %d images (%d steps/epoch), %s width %d, %s BN%s, "
                 "%d replica(s)", config.method, config.variant, len(train), steps,
                 config.model.arch,
                 config.model.width, "dual" if config.dual_bn else "single",
                 " (synchronised)" if config.model.sync_bn else "", replicas)
    layout = run_layout(model_dir) if resume else None
    if layout is not None and layout != LAYOUT_VERSION:
        logging.warning("resuming a run trained with encoder layout_version %d: the model is "
                        "rebuilt in that layout (acl_tf.models.resnet), not the current %d",
                        layout, LAYOUT_VERSION)
    with strategy.scope():
        model = build_pretrainer(config, layout)
        model.compile(optimizer=build_pretrain_optimizer(config.optimizer, config.batch_size, steps,
                                                config.epochs))

    options = tf.data.Options()
    # The arrays are in memory (no files to shard): every worker takes its part of each batch.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA

    def make_dataset(epoch):
        return make_pretrain_dataset(train.images, train.labels, batch_size=config.batch_size,
                                     config=config.augment_at(epoch + 1), seed=config.seed,
                                     epoch=epoch,
                                     with_original=config.uses_air).with_options(options)

    schedule = [StreamSchedule(config)] if config.dynamic_schedules else []

    with distribute.task_write_dir(model_dir, strategy) as write_dir:
        history = fit_epochs(model, make_dataset, model_dir=write_dir, resume_dir=model_dir,
                             epochs=config.epochs, steps_per_epoch=steps,
                             images_per_step=config.batch_size,
                             log_every=config.log_every_steps,
                             keep_checkpoints=config.keep_checkpoints, resume=resume,
                             callbacks=callbacks, verbose=verbose, metric_callbacks=schedule)
        save_keras_atomic(model.output_encoder, write_dir / rd.ENCODER)
        save_keras_atomic(model, write_dir / rd.PRETRAINER)
    return model, history
