"""Runs supervised fine-tuning (AFF / ALF / SLF) from a :class:`acl_tf.configs.FinetuneConfig`.

Steps: load the training split and hold out a class-balanced validation split; build the
classifier (the pre-trained encoder of ``config.pretrained`` with its projection head dropped, or
a randomly initialised one) and its :class:`~acl_tf.trainers.finetuner.Finetuner`; train with
:func:`acl_tf.tasks.fit.fit_epochs` (checkpoints, resume, progress, TensorBoard) while
:class:`~acl_tf.tasks.selection.ModelSelection` measures clean and PGD-20 validation accuracy
after every epoch; finally measure ``best.keras`` on the test split and export it as a SavedModel.

The run directory receives, besides what ``fit_epochs`` writes (``config.json``,
``checkpoints/``, ``logs/``, ``history.json``, ``training_curves.png``): ``best.keras``,
``last.keras``, ``metrics.json`` and ``saved_model/<version>/``.

Under a ``tf.distribute`` strategy (``strategy=``, see :func:`acl_tf.distribute.make_strategy`)
the model is built in its scope and ``batch_size`` is the global batch, split evenly over the
replicas (``drop_remainder`` must then be true); in a multi-worker job only the chief writes the
run directory (the other workers write the same files into a temporary one).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import keras
import numpy as np
from absl import logging

from acl_tf import data as data_lib
from acl_tf import distribute
from acl_tf.configs import ConfigError, FinetuneConfig
from acl_tf.core import run_dir as rd
from acl_tf.data import load_split
from acl_tf.data.augment import make_finetune_dataset
from acl_tf.optimizers import build_finetune_optimizer
from acl_tf.serving.export import export_run
from acl_tf.tasks.encoders import align_model_config, build_classifier
from acl_tf.tasks.fit import prepare_run_dir
from acl_tf.tasks.selection import train_and_select, validation_accuracy
from acl_tf.trainers.finetuner import Finetuner


# -- model and optimizer ------------------------------------------------------------------------
def build_finetuner(config: FinetuneConfig) -> Finetuner:
    """Classifier (encoder + zero-initialised linear layer) wrapped in its Finetuner (built)."""
    classifier = build_classifier(config, config.bn, freeze_encoder=config.freeze_encoder)
    attack = config.attack if config.mode == "aff" else config.alf_attack
    model = Finetuner(classifier, mode=config.mode, attack=attack, beta=config.trades_beta,
                      seed=config.seed)
    size = config.data.image_size
    model(np.zeros((2, size, size, 3), np.float32), training=False)  # create the weights
    return model


# -- data ---------------------------------------------------------------------------------------
def load_test_split(config: FinetuneConfig):
    """The test split, or with ``config.test_limit`` a class-balanced random subset of it
    (``test_limit / num_classes`` images per class, seed 0, in file order): a file's first N
    images can be far from balanced (CIFAR-10's test TFRecord is sorted by class)."""
    test = load_split(config.data, config.data.test_split)
    if config.test_limit is None or config.test_limit >= len(test):
        return test
    per_class = config.test_limit // config.data.num_classes
    return test.take(data_lib.class_balanced_indices(
        test.labels, per_class=per_class, num_classes=config.data.num_classes, seed=0))


# -- the run ------------------------------------------------------------------------------------
@rd.cleanup_on_failure()
def run_finetuning(config: FinetuneConfig, model_dir, pretrained: Optional[str] = None,
                   resume: bool = False, callbacks: Sequence[keras.callbacks.Callback] = (),
                   verbose="auto", strategy=None):
    """Fine-tunes, validates and selects every epoch, tests and exports ``best.keras``.

    Args:
        config: the run's settings.
        model_dir: run directory (created; refuses existing checkpoints unless ``resume``).
        pretrained: pre-training run directory or ``.keras`` encoder file; overrides
            ``config.pretrained`` (None keeps it; no pre-trained encoder at all = RI).
        resume: continue from the last checkpoint in ``model_dir``.
        callbacks: extra Keras callbacks (run after each epoch's checkpoint).
        strategy: a ``tf.distribute.Strategy`` or its name; None is the default strategy.

    Returns:
        ``(finetuner, metrics)``: the trained model (last epoch) and the ``metrics.json`` record.
    """
    strategy = distribute.resolve_strategy(strategy)
    if pretrained is not None:
        config = dataclasses.replace(config, pretrained=str(pretrained))
    config = align_model_config(config)
    replicas = strategy.num_replicas_in_sync
    if replicas > 1 and (config.batch_size % replicas or not config.drop_remainder):
        raise ConfigError(f"On {replicas} replicas batch_size ({config.batch_size}) must be a "
                          "multiple of the replicas and drop_remainder true (every replica "
                          "gets an equal share of each batch).")
    model_dir = prepare_run_dir(model_dir, config, resume, write=distribute.is_chief(strategy))
    keras.utils.set_random_seed(config.seed)

    full = load_split(config.data, config.data.train_split, config.data.limit)
    if config.val_size >= len(full):
        raise ConfigError(f"val_size {config.val_size} leaves no training images out of "
                          f"{len(full)}; lower val_size or raise data.limit.")
    train, val = data_lib.train_val_split(full, val_size=config.val_size, seed=config.seed)
    count = len(train) // config.batch_size if config.drop_remainder else math.ceil(
        len(train) / config.batch_size)
    if count == 0:
        raise ConfigError(f"batch_size {config.batch_size} exceeds the {len(train)} training "
                          "images with drop_remainder; lower batch_size.")
    logging.info("fine-tuning (%s, %s BN) on %d images (%d steps/epoch), validating on %d",
                 config.mode.upper(), config.bn, len(train), count, len(val))

    with strategy.scope():
        model = build_finetuner(config)
        model.compile(optimizer=build_finetune_optimizer(config.optimizer, count))
    with distribute.task_write_dir(model_dir, strategy) as write_dir:
        return _train_select_test(config, model, train, val, count, model_dir, write_dir, resume,
                                  callbacks, verbose)


def _train_select_test(config, model, train, val, count, model_dir, write_dir, resume,
                       callbacks, verbose):
    """The rest of :func:`run_finetuning`, writing into ``write_dir`` (``model_dir`` on the
    chief of a multi-worker job, a temporary directory on the other workers)."""
    def make_dataset(epoch):
        return make_finetune_dataset(train.images, train.labels, batch_size=config.batch_size,
                                     seed=config.seed, epoch=epoch, augment=config.augment,
                                     drop_remainder=config.drop_remainder)

    selection = train_and_select(
        model, make_dataset, val, write_dir, config=config, attack=config.eval_attack,
        epochs=config.epochs, steps_per_epoch=count, batch_size=config.batch_size,
        select_by=config.select_by, resume=resume, resume_dir=model_dir, callbacks=callbacks,
        verbose=verbose,
        info={"mode": config.mode, "bn": config.bn, "pretrained": config.pretrained,
              "eval_attack_steps": config.eval_attack.steps, "val_size": len(val)})
    best = selection.load_best()
    record = selection.record
    if config.evaluate_test and "test" not in record:
        test = load_test_split(config)
        result = validation_accuracy(best, test.images, test.labels, config.eval_attack,
                                     batch_size=config.eval_batch_size, seed=config.seed)
        logging.info("best.keras (epoch %d) on %d test images: accuracy %.4f, PGD-%d "
                     "accuracy %.4f", record["best_epoch"], result["count"], result["acc"],
                     config.eval_attack.steps, result["adv_acc"])
        selection.update(test={**result, "epoch": record["best_epoch"]})
    if not record.get("finished"):
        exported = export_run(best, write_dir) if config.export else None
        selection.update(finished=True, saved_model=exported)
    return model, selection.record
