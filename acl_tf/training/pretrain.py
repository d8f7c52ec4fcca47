"""Runs ACL pre-training from a :class:`acl_tf.config.PretrainConfig` into a run directory.

Besides what :func:`acl_tf.training.loop.fit_epochs` writes, the run directory receives
``encoder.keras``: the trained encoder with both BN branches (the projection head is dropped, as
fine-tuning does), and ``pretrainer.keras``: encoder + head.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import keras
import numpy as np
from absl import logging

from acl_tf import data as data_lib
from acl_tf.augment import make_pretrain_dataset
from acl_tf.config import ConfigError, OptimizerConfig, PretrainConfig
from acl_tf.models import ProjectionHead, build_encoder
from acl_tf.training.loop import fit_epochs, prepare_run_dir, save_keras_atomic
from acl_tf.training.optimizers import LARS, warmup_cosine
from acl_tf.training.pretrainer import ACLPretrainer


def build_optimizer(config: OptimizerConfig, batch_size: int, steps_per_epoch: int, epochs: int):
    """The configured optimiser with its (warm-up +) cosine or constant schedule."""
    peak = config.peak_learning_rate(batch_size)
    total = steps_per_epoch * epochs
    warmup = config.warmup_epochs * steps_per_epoch
    if config.schedule == "cosine":
        if warmup >= total:
            raise ConfigError(f"optimizer.warmup_epochs ({config.warmup_epochs}) must be smaller "
                              f"than the number of epochs ({epochs}).")
        lr = warmup_cosine(peak, total, warmup, config.final_learning_rate)
    else:
        lr = peak
    if config.name == "lars":
        return LARS(lr, momentum=config.momentum, weight_decay=config.weight_decay,
                    trust_coefficient=config.trust_coefficient)
    if config.name == "sgd":
        # Coupled L2 as in torch.optim.SGD is what the reference uses; Keras' weight_decay is
        # decoupled but equals it up to the learning-rate factor for plain SGD.
        return keras.optimizers.SGD(lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay or None)
    return keras.optimizers.Adam(lr)


def build_pretrainer(config: PretrainConfig) -> ACLPretrainer:
    """Encoder + head + variant, not yet compiled."""
    dual = config.dual_bn
    encoder = build_encoder(config.model.arch, config.model.width, dual_bn=dual)
    head = ProjectionHead(config.model.head_dim, config.model.head_dim,
                          num_layers=config.model.head_layers, dual_bn=dual, name="head")
    model = ACLPretrainer(encoder, head, variant=config.variant, temperature=config.temperature,
                          attack=config.attack, ds_alpha=config.ds_alpha,
                          ds_average=config.ds_average, seed=config.seed)
    size = config.data.image_size
    model(np.zeros((2, size, size, 3), np.float32), training=False)  # create the weights
    return model


def load_training_images(config) -> data_lib.ImageData:
    """The training split named by ``config.data`` (first ``limit`` images)."""
    d = config.data
    return data_lib.load(d.source, d.train_split, data_dir=d.data_dir, download=d.download,
                         image_size=d.image_size, num_classes=d.num_classes, limit=d.limit)


def run_pretraining(config: PretrainConfig, model_dir, resume: bool = False,
                    callbacks: Sequence[keras.callbacks.Callback] = (), verbose="auto"):
    """Pre-trains, checkpointing every epoch; returns (pretrainer, history)."""
    model_dir = prepare_run_dir(model_dir, config, resume)
    keras.utils.set_random_seed(config.seed)
    train = load_training_images(config)
    steps = len(train) // config.batch_size
    if steps == 0:
        raise ConfigError(f"batch_size {config.batch_size} exceeds the {len(train)} training "
                          "images; lower batch_size or raise data.limit.")
    logging.info("pre-training %s on %d images (%d steps/epoch), %s width %d, %s BN",
                 config.variant, len(train), steps, config.model.arch, config.model.width,
                 "dual" if config.dual_bn else "single")
    model = build_pretrainer(config)
    model.compile(optimizer=build_optimizer(config.optimizer, config.batch_size, steps,
                                            config.epochs))

    def make_dataset(epoch):
        return make_pretrain_dataset(train.images, train.labels, batch_size=config.batch_size,
                                     config=config.augment, seed=config.seed, epoch=epoch)

    history = fit_epochs(model, make_dataset, model_dir=model_dir, epochs=config.epochs,
                         steps_per_epoch=steps, images_per_step=config.batch_size,
                         log_every=config.log_every_steps,
                         keep_checkpoints=config.keep_checkpoints, resume=resume,
                         callbacks=callbacks, verbose=verbose)
    save_keras_atomic(model.encoder, Path(model_dir) / "encoder.keras")
    save_keras_atomic(model, Path(model_dir) / "pretrainer.keras")
    return model, history
