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
import json
import math
import zipfile
from pathlib import Path
from typing import Optional, Sequence

import keras
import numpy as np
from absl import logging

from acl_tf import data as data_lib
from acl_tf import distribute
from acl_tf.configs import ConfigError, FinetuneConfig
from acl_tf.data.augment import make_finetune_dataset
from acl_tf.models import Classifier, build_encoder, set_synchronized_bn
from acl_tf.optimizers import SGDL2, piecewise_epochs
from acl_tf.tasks.fit import fit_epochs, prepare_run_dir
from acl_tf.tasks.selection import ModelSelection, validation_accuracy
from acl_tf.trainers.finetuner import Finetuner

ENCODER_FILE = "encoder.keras"


# -- the pre-trained encoder --------------------------------------------------------------------
def encoder_path(pretrained) -> Path:
    """``DIR/encoder.keras`` of a pre-training run directory (or a ``.keras`` file itself)."""
    path = Path(pretrained)
    if path.suffix == ".keras":
        if not path.is_file():
            raise ConfigError(f"Pre-trained encoder file {str(path)!r} does not exist.")
        return path
    if not path.is_dir():
        raise ConfigError(f"Pre-trained model directory {str(path)!r} does not exist (pass the "
                          "--model_dir of a `python -m acl_tf.pretrain` run).")
    file = path / ENCODER_FILE
    if not file.is_file():
        raise ConfigError(f"{str(path)!r} has no {ENCODER_FILE}: it is not a finished "
                          "pre-training run (python -m acl_tf.pretrain writes it at the end).")
    return file


def encoder_spec(path) -> dict:
    """Architecture of a saved encoder, read from the ``.keras`` archive without loading it.

    Returns ``{"arch", "width" (ResNet-18 only), "dual_bn"}``.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            saved = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise ConfigError(f"Cannot read the encoder {str(path)!r}: {err}") from err
    name, cfg = saved.get("class_name"), saved.get("config", {})
    if name == "ResNet18":
        return {"arch": "resnet18", "width": int(cfg["width"]), "dual_bn": bool(cfg["dual_bn"])}
    if name == "WideResNet":
        return {"arch": f"wrn{cfg['depth']}_{cfg['widen_factor']}",
                "dual_bn": bool(cfg["dual_bn"])}
    raise ConfigError(f"{str(path)!r} holds a {name!r}, not an encoder (ResNet18 / WideResNet).")


def align_model_config(config: FinetuneConfig, strict: Sequence[str] = ()) -> FinetuneConfig:
    """Sets ``config.model`` (arch, width, bn) to the pre-trained encoder's architecture.

    The saved encoder defines the architecture; ``strict`` names ``model`` fields that the user
    set explicitly: if one of them disagrees with the encoder that is a ConfigError naming both.
    Without ``config.pretrained`` the config is returned unchanged.
    """
    if not config.pretrained:
        return config
    path = encoder_path(config.pretrained)
    spec = encoder_spec(path)
    actual = {"arch": spec["arch"], "bn": "dual" if spec["dual_bn"] else "single"}
    if "width" in spec:
        actual["width"] = spec["width"]
    for field in strict:
        if field in actual and getattr(config.model, field) != actual[field]:
            raise ConfigError(
                f"model.{field} mismatch: the config sets {field}={getattr(config.model, field)!r} "
                f"but the pre-trained encoder {str(path)!r} has {field}={actual[field]!r}. The "
                f"encoder defines the architecture: drop the model.{field} override.")
    changed = {k: v for k, v in actual.items() if getattr(config.model, k) != v}
    if changed:
        logging.info("model config follows the pre-trained encoder: %s", changed)
    return dataclasses.replace(config, model=dataclasses.replace(config.model, **actual))


def load_encoder(config: FinetuneConfig):
    """The pre-trained encoder (both BN branches; no projection head) or a random one (RI)."""
    if config.pretrained:
        path = encoder_path(config.pretrained)
        encoder = keras.saving.load_model(path, compile=False)
        logging.info("loaded pre-trained encoder %s (%s)", path, encoder_spec(path))
        return encoder
    dual = config.model.bn != "single"
    logging.info("random init (RI): %s width %d, %s BN", config.model.arch, config.model.width,
                 "dual" if dual else "single")
    return build_encoder(config.model.arch, config.model.width, dual_bn=dual)


# -- model and optimizer ------------------------------------------------------------------------
def build_finetuner(config: FinetuneConfig) -> Finetuner:
    """Classifier (encoder + zero-initialised linear layer) wrapped in its Finetuner (built)."""
    encoder = load_encoder(config)
    if not getattr(encoder, "dual_bn", True):
        logging.info("the encoder has a single BN: bn=%s selects the same statistics", config.bn)
    classifier = Classifier(encoder, config.data.num_classes, branch=config.bn,
                            freeze_encoder=config.freeze_encoder, name="classifier")
    if config.model.sync_bn:  # cross-replica batch statistics (a saved encoder has none)
        set_synchronized_bn(classifier)
    attack = config.attack if config.mode == "aff" else config.alf_attack
    model = Finetuner(classifier, mode=config.mode, attack=attack, beta=config.trades_beta,
                      seed=config.seed)
    size = config.data.image_size
    model(np.zeros((2, size, size, 3), np.float32), training=False)  # create the weights
    return model


def build_optimizer(config: FinetuneConfig, steps_per_epoch: int) -> SGDL2:
    """SGD (momentum, coupled L2) with the per-epoch piecewise-constant rate."""
    opt = config.optimizer
    lr = piecewise_epochs(opt.learning_rate, steps_per_epoch, opt.decay_epochs, opt.decay_factor)
    return SGDL2(lr, momentum=opt.momentum, weight_decay=opt.weight_decay,
                 nesterov=opt.nesterov)


# -- data ---------------------------------------------------------------------------------------
def load_split(config: FinetuneConfig, split: str, limit: Optional[int] = None):
    d = config.data
    return data_lib.load(d.source, split, data_dir=d.data_dir, download=d.download,
                         image_size=d.image_size, num_classes=d.num_classes, limit=limit)


def load_test_split(config: FinetuneConfig):
    """The test split, or with ``config.test_limit`` a class-balanced random subset of it
    (``test_limit / num_classes`` images per class, seed 0, in file order): a file's first N
    images can be far from balanced (CIFAR-10's test TFRecord is sorted by class)."""
    test = load_split(config, config.data.test_split)
    if config.test_limit is None or config.test_limit >= len(test):
        return test
    per_class = config.test_limit // config.data.num_classes
    return test.take(data_lib.class_balanced_indices(
        test.labels, per_class=per_class, num_classes=config.data.num_classes, seed=0))


def _export(classifier, model_dir: Path) -> Optional[str]:
    try:
        from acl_tf.serving.export import export_classifier
    except ImportError as err:
        logging.info("SavedModel export skipped: acl_tf.serving.export is not available (%s)", err)
        return None
    path = export_classifier(classifier, str(model_dir / "saved_model"))
    logging.info("exported best.keras as a SavedModel to %s", path)
    return str(path)


# -- the run ------------------------------------------------------------------------------------
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

    full = load_split(config, config.data.train_split, config.data.limit)
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
        model.compile(optimizer=build_optimizer(config, count))
    with distribute.task_write_dir(model_dir, strategy) as write_dir:
        return _train_select_test(config, model, train, val, count, model_dir, write_dir, resume,
                                  callbacks, verbose)


def _train_select_test(config, model, train, val, count, model_dir, write_dir, resume,
                       callbacks, verbose):
    """The rest of :func:`run_finetuning`, writing into ``write_dir`` (``model_dir`` on the
    chief of a multi-worker job, a temporary directory on the other workers)."""
    selection = ModelSelection(
        model.classifier, val.images, val.labels, config.eval_attack, write_dir,
        select_by=config.select_by, batch_size=config.eval_batch_size, seed=config.seed,
        info={"mode": config.mode, "bn": config.bn, "pretrained": config.pretrained,
              "eval_attack_steps": config.eval_attack.steps, "val_size": len(val)})
    measure, commit = selection.callbacks()

    def make_dataset(epoch):
        return make_finetune_dataset(train.images, train.labels, batch_size=config.batch_size,
                                     seed=config.seed, epoch=epoch, augment=config.augment,
                                     drop_remainder=config.drop_remainder)

    fit_epochs(model, make_dataset, model_dir=write_dir, resume_dir=model_dir,
               epochs=config.epochs,
               steps_per_epoch=count, images_per_step=config.batch_size,
               log_every=config.log_every_steps, keep_checkpoints=config.keep_checkpoints,
               resume=resume, callbacks=[commit, *callbacks], metric_callbacks=[measure],
               verbose=verbose)
    selection.catch_up(config.epochs)  # a crash after the last checkpoint

    best = keras.saving.load_model(write_dir / "best.keras", compile=False)
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
        exported = _export(best, write_dir) if config.export else None
        selection.update(finished=True, saved_model=exported)
    return model, selection.record
