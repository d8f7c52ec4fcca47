"""Runs semi-supervised adversarial training from few labels (reference section 4, Table 2).

Given a pre-trained encoder PM (or none: the "vanilla UAT++" baseline), three steps write into
one output directory ``OUT``:

1. **teacher** (step ii): from PM with its ``normal`` BN, standard training of the classifier on
   the labelled subset only; the epoch of highest clean validation accuracy is kept as
   ``OUT/teacher/best.keras`` and tested.
2. **pseudo_label**: the teacher's soft labels ``softmax(logits / T)`` for every training image,
   written atomically to ``OUT/pseudo_labels.npz`` (:mod:`acl_tf.data.pseudo_labels`), with their
   accuracy over the whole training set (the paper's diagnostic).
3. **student** (step iii): from PM again with its ``adv`` BN, adversarial training on every
   non-validation image with the loss l_s
   (:class:`~acl_tf.trainers.semisup.SemisupStudent`); batches mix labelled and
   unlabelled images in proportion to the label rate. The epoch of highest robust validation
   accuracy is kept (``OUT/student/best.keras``), tested (clean and PGD-20) and exported as a
   SavedModel to ``OUT/student/saved_model/<version>/``.

Each training step is a :func:`acl_tf.tasks.fit.fit_epochs` run in its own directory
(``config.json``, ``checkpoints/``, ``logs/``, ``history.json``, ``training_curves.png``,
``last.keras``, ``best.keras``, ``metrics.json``) and can be resumed. ``OUT/metrics.json`` gathers
the headline figures of all steps.

The split: a class-balanced validation hold-out of ``val_size`` training images (the same one
``acl_tf.finetune`` holds out for the same seed), then a class-balanced labelled subset of the
rest (:func:`label_split`); everything else is unlabelled.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from acl_tf import data as data_lib
from acl_tf import distribute
from acl_tf.attacks import PGDConfig
from acl_tf.configs import ConfigError, SemisupConfig, write_config
from acl_tf.core.io import write_json_atomic
from acl_tf.data.augment import make_finetune_dataset
from acl_tf.data.pseudo_labels import (
    PseudoLabelError,
    PseudoLabels,
    load_pseudo_labels,
    make_pseudo_labels,
    save_pseudo_labels,
)
from acl_tf.models import Classifier, set_synchronized_bn
from acl_tf.tasks.finetune import align_model_config, build_optimizer, load_encoder, load_split
from acl_tf.tasks.fit import fit_epochs, prepare_run_dir
from acl_tf.tasks.selection import ModelSelection, read_metrics
from acl_tf.trainers.semisup import SemisupStudent, TeacherTrainer

STEPS = ("all", "teacher", "pseudo_label", "student")
TEACHER_DIR = "teacher"
STUDENT_DIR = "student"
PSEUDO_LABEL_FILE = "pseudo_labels.npz"
METRICS_FILE = "metrics.json"
TEACHER_BRANCH = "normal"
STUDENT_BRANCH = "adv"
# Model selection of the teacher is on clean accuracy: an attack of 0 steps is the clean image.
_NO_ATTACK = PGDConfig(steps=0, random_start="none")


def check_step(step: str) -> str:
    """Returns the lower-cased step name or raises a ValueError naming the valid ones."""
    name = str(step).lower()
    if name not in STEPS:
        raise ValueError(f"Unknown step {step!r}; expected one of {STEPS}.")
    return name


# -- the label split -----------------------------------------------------------------------------
@dataclasses.dataclass
class LabelSplit:
    """Sorted index arrays into the training split: disjoint, together covering it."""

    labelled: np.ndarray
    unlabelled: np.ndarray
    validation: np.ndarray

    def masks(self, size: int):
        """``(is_labelled, is_validation)`` boolean arrays of length ``size``."""
        is_labelled = np.zeros(size, bool)
        is_validation = np.zeros(size, bool)
        is_labelled[self.labelled] = True
        is_validation[self.validation] = True
        return is_labelled, is_validation


def labels_per_class_for(label_fraction: float, pool_size: int, num_classes: int) -> int:
    """Images per class of a labelled subset holding ``label_fraction`` of ``pool_size`` images:
    ``round(label_fraction * pool_size / num_classes)`` (halves up), at least 1."""
    if not 0.0 < label_fraction <= 1.0:
        raise ValueError(f"label_fraction must be in (0, 1], got {label_fraction}.")
    return max(1, int(math.floor(label_fraction * pool_size / num_classes + 0.5)))


def label_split(labels, *, num_classes: int, val_size: int,
                label_fraction: Optional[float] = None, labels_per_class: Optional[int] = None,
                seed: int = 0) -> LabelSplit:
    """Deterministic class-balanced split into labelled, unlabelled and validation indices.

    The validation hold-out is ``val_size / num_classes`` random images per class (exactly
    :func:`acl_tf.data.train_val_split`'s for the same seed). From the remaining pool, the
    labelled subset takes the same number of images from every class: ``labels_per_class``, or
    :func:`labels_per_class_for` ``(label_fraction, pool size)``. Exactly one of the two is given.

    Raises:
        ValueError: bad arguments; :class:`acl_tf.data.DataError` when a class has too few
            images for the request.
    """
    labels = np.asarray(labels)
    if (label_fraction is None) == (labels_per_class is None):
        raise ValueError("pass exactly one of label_fraction and labels_per_class")
    if val_size < 0 or val_size % num_classes:
        raise ValueError(f"val_size must be a non-negative multiple of num_classes="
                         f"{num_classes}, got {val_size}")
    validation = data_lib.class_balanced_indices(labels, per_class=val_size // num_classes,
                                                 num_classes=num_classes, seed=seed)
    if labels_per_class is None:
        labels_per_class = labels_per_class_for(label_fraction, len(labels) - len(validation),
                                                num_classes)
    if labels_per_class < 1:
        raise ValueError(f"labels_per_class must be >= 1, got {labels_per_class}")
    # A seed stream of its own, so that the labelled draw does not mirror the validation draw.
    labelled = data_lib.class_balanced_indices(
        labels, per_class=labels_per_class, num_classes=num_classes,
        seed=int(np.random.SeedSequence([seed, 1]).generate_state(1)[0]), exclude=validation)
    rest = np.ones(len(labels), bool)
    rest[validation] = False
    rest[labelled] = False
    return LabelSplit(labelled=labelled, unlabelled=np.flatnonzero(rest).astype(np.int64),
                      validation=validation)


def config_split(config: SemisupConfig, labels) -> LabelSplit:
    """:func:`label_split` with the settings of ``config``."""
    return label_split(labels, num_classes=config.data.num_classes, val_size=config.val_size,
                       label_fraction=config.label_fraction,
                       labels_per_class=config.labels_per_class, seed=config.seed)


# -- the student's mixed batches -----------------------------------------------------------------
def student_batch_sizes(num_labelled: int, num_unlabelled: int, batch_size: int):
    """``(labelled per batch, unlabelled per batch, steps per epoch)`` of the student.

    A batch holds ``max(1, round(batch_size * rate))`` labelled images (rate = labelled share of
    the training images) and the rest unlabelled; an epoch is one pass over the unlabelled images
    (the labelled ones cycle at the same rate, each pass reshuffled).
    """
    if num_labelled < 1 or num_unlabelled < 1:
        raise ConfigError(f"The student needs labelled and unlabelled images, got "
                          f"{num_labelled} labelled and {num_unlabelled} unlabelled (for "
                          "fully supervised training use acl_tf.finetune).")
    if batch_size < 2:
        raise ConfigError(f"student.batch_size must be >= 2, got {batch_size}.")
    rate = num_labelled / (num_labelled + num_unlabelled)
    n_labelled = min(batch_size - 1, max(1, int(math.floor(batch_size * rate + 0.5))))
    n_unlabelled = batch_size - n_labelled
    return n_labelled, n_unlabelled, math.ceil(num_unlabelled / n_unlabelled)


def _index_stream(images, count: int, seed: int, epoch: int, augment: bool) -> tf.data.Dataset:
    """At least ``count`` unbatched ``(image, index)`` pairs: reshuffled passes over ``images``."""
    n = len(images)
    passes = max(1, math.ceil(count / n))
    stream = None
    for r in range(passes):
        part = make_finetune_dataset(images, np.arange(n, dtype=np.int64),
                                     batch_size=min(n, 512), seed=seed,
                                     epoch=epoch * passes + r, augment=augment).unbatch()
        stream = part if stream is None else stream.concatenate(part)
    return stream


def make_student_dataset(images, labels, targets, labelled, unlabelled, *, batch_size: int,
                         seed: int, epoch: int, augment: bool = True):
    """One student epoch: ``(dataset, steps)`` of dict batches for :class:`SemisupStudent`.

    Args:
        images: uint8 [N, H, W, 3] training images; labels: int [N]; targets: float [N, C] soft
            pseudo-labels.
        labelled, unlabelled: index arrays into them.
        batch_size: images per batch (split by :func:`student_batch_sizes`).
        seed, epoch: the order and augmentation depend only on these (a resumed run sees the
            same data).
        augment: RandomCrop(32, padding=4) + horizontal flip.

    Each batch holds the labelled images first (``labels`` = their true labels,
    ``is_labelled`` True) then the unlabelled ones (``labels`` = -1: their true labels never
    reach training); ``targets`` are every image's soft pseudo-labels.
    """
    labelled, unlabelled = np.asarray(labelled), np.asarray(unlabelled)
    n_l, n_u, steps = student_batch_sizes(len(labelled), len(unlabelled), batch_size)
    lab_images, unl_images = images[labelled], images[unlabelled]
    lab_labels = tf.constant(np.asarray(labels)[labelled].astype(np.int64))
    lab_targets = tf.constant(np.asarray(targets)[labelled].astype(np.float32))
    unl_targets = tf.constant(np.asarray(targets)[unlabelled].astype(np.float32))
    lab = _index_stream(lab_images, n_l * steps, seed, epoch, augment).batch(
        n_l, drop_remainder=True)
    unl = _index_stream(unl_images, n_u * steps, seed + 1, epoch, augment).batch(
        n_u, drop_remainder=True)

    def combine(lab_batch, unl_batch):
        (x_l, i_l), (x_u, i_u) = lab_batch, unl_batch
        return {"images": tf.concat([x_l, x_u], axis=0),
                "labels": tf.concat([tf.gather(lab_labels, i_l),
                                     tf.fill([n_u], tf.constant(-1, tf.int64))], axis=0),
                "targets": tf.concat([tf.gather(lab_targets, i_l),
                                      tf.gather(unl_targets, i_u)], axis=0),
                "is_labelled": tf.concat([tf.ones([n_l], tf.bool), tf.zeros([n_u], tf.bool)],
                                         axis=0)}

    dataset = tf.data.Dataset.zip((lab, unl)).take(steps).map(
        combine, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE), steps


# -- files ---------------------------------------------------------------------------------------
def read_summary(model_dir) -> dict:
    """``OUT/metrics.json`` (empty if no step has finished yet)."""
    path = Path(model_dir) / METRICS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _update_summary(model_dir, **fields) -> dict:
    summary = {**read_summary(model_dir), **fields}
    write_json_atomic(Path(model_dir) / METRICS_FILE, summary)
    return summary


def _finished(run_dir: Path) -> bool:
    return bool(read_metrics(run_dir).get("finished"))


def _split_info(config: SemisupConfig, split: LabelSplit) -> dict:
    return {"label_fraction": config.label_fraction, "labels_per_class": config.labels_per_class,
            "num_labelled": int(len(split.labelled)),
            "num_unlabelled": int(len(split.unlabelled)),
            "num_validation": int(len(split.validation)), "pretrained": config.pretrained}


def _load_train(config: SemisupConfig):
    full = load_split(config, config.data.train_split, config.data.limit)
    return full, config_split(config, full.labels)


def _load_test(config: SemisupConfig):
    return load_split(config, config.data.test_split)


def _build_classifier(config: SemisupConfig, branch: str) -> Classifier:
    """The pre-trained encoder (or a random one) with a zero-initialised linear layer (call in
    the strategy's scope)."""
    classifier = Classifier(load_encoder(config), config.data.num_classes, branch=branch,
                            freeze_encoder=False, name="classifier")
    if config.model.sync_bn:  # cross-replica batch statistics (a saved encoder has none)
        set_synchronized_bn(classifier)
    size = config.data.image_size
    classifier(np.zeros((2, size, size, 3), np.float32), training=False)
    return classifier


# -- step ii: the teacher ------------------------------------------------------------------------
def run_teacher(config: SemisupConfig, model_dir, resume: bool = False,
                callbacks: Sequence[keras.callbacks.Callback] = (), verbose="auto",
                strategy=None, resume_dir=None) -> dict:
    """Trains, selects and tests the teacher in ``model_dir/teacher``; returns its metrics.

    ``strategy``: a ``tf.distribute.Strategy`` or its name (None: the default). On several
    replicas every batch is full (the last partial one is dropped) so that it splits evenly.
    ``resume_dir``: the run directory a resumed run starts from (default ``model_dir``; a
    non-chief worker writes into a temporary ``model_dir``).
    """
    strategy = distribute.resolve_strategy(strategy)
    tcfg = config.teacher
    distribute.check_global_batch(strategy, tcfg.batch_size, "teacher.batch_size")
    model_dir = Path(model_dir)
    run_dir = prepare_run_dir(model_dir / TEACHER_DIR, config, resume)
    keras.utils.set_random_seed(config.seed)
    full, split = _load_train(config)
    labelled, val = full.take(split.labelled), full.take(split.validation)
    even = strategy.num_replicas_in_sync > 1
    steps = (len(labelled) // tcfg.batch_size if even
             else math.ceil(len(labelled) / tcfg.batch_size))
    if steps == 0:
        raise ConfigError(f"teacher.batch_size {tcfg.batch_size} exceeds the {len(labelled)} "
                          "labelled images; lower it.")
    logging.info("teacher: standard training (%s BN) on %d labelled images (%d steps/epoch), "
                 "validating on %d", TEACHER_BRANCH, len(labelled), steps, len(val))

    with strategy.scope():
        classifier = _build_classifier(config, TEACHER_BRANCH)
        model = TeacherTrainer(classifier)
        model.compile(optimizer=build_optimizer(tcfg, steps))
    selection = ModelSelection(
        classifier, val.images, val.labels, _NO_ATTACK, run_dir, select_by="clean",
        batch_size=config.eval_batch_size, seed=config.seed,
        info={"role": "teacher", "bn": TEACHER_BRANCH, **_split_info(config, split)})
    measure, commit = selection.callbacks()

    def make_dataset(epoch):
        return make_finetune_dataset(labelled.images, labelled.labels,
                                     batch_size=tcfg.batch_size, seed=config.seed, epoch=epoch,
                                     augment=tcfg.augment, drop_remainder=even)

    fit_epochs(model, make_dataset, model_dir=run_dir, epochs=tcfg.epochs,
               resume_dir=Path(resume_dir) / TEACHER_DIR if resume_dir else None,
               steps_per_epoch=steps, images_per_step=tcfg.batch_size,
               log_every=config.log_every_steps, keep_checkpoints=config.keep_checkpoints,
               resume=resume, callbacks=[commit, *callbacks], metric_callbacks=[measure],
               verbose=verbose)
    selection.catch_up(tcfg.epochs)
    record = selection.record
    summary = {"teacher_best_epoch": record["best_epoch"],
               "teacher_val_accuracy": record["best"]["val_acc"]}
    if config.evaluate_test and "test" not in record:
        from acl_tf.evaluation.robustness import clean_accuracy

        best = keras.saving.load_model(run_dir / "best.keras", compile=False)
        test = _load_test(config)
        result = clean_accuracy(best, test.to_float(), test.labels,
                                batch_size=config.eval_batch_size)
        logging.info("teacher best.keras (epoch %d): test accuracy %.4f on %d images",
                     record["best_epoch"], result.accuracy, result.num_examples)
        selection.update(test={"acc": result.accuracy, "count": result.num_examples,
                               "epoch": record["best_epoch"]})
    if "test" in record:
        summary["teacher_test_accuracy"] = record["test"]["acc"]
    selection.update(finished=True)
    _update_summary(model_dir, **summary, **_split_info(config, split))
    return selection.record


# -- pseudo-labels -------------------------------------------------------------------------------
def teacher_file(model_dir, teacher=None) -> Path:
    """The teacher classifier to label with: ``teacher`` or ``model_dir/teacher/best.keras``."""
    path = Path(teacher) if teacher else Path(model_dir) / TEACHER_DIR / "best.keras"
    if not path.is_file():
        raise ConfigError(f"No teacher classifier at {str(path)!r}: run `--step=teacher` into "
                          "this --model_dir first, or pass --teacher=FILE.keras.")
    return path


def run_pseudo_label(config: SemisupConfig, model_dir, teacher=None) -> dict:
    """Labels every training image with the teacher; writes ``model_dir/pseudo_labels.npz``.

    Returns the diagnostics (pseudo-label accuracy over all training images and per subset).
    """
    model_dir = Path(model_dir)
    path = teacher_file(model_dir, teacher)
    model = keras.saving.load_model(path, compile=False)
    full, split = _load_train(config)
    is_labelled, is_validation = split.masks(len(full))
    logging.info("pseudo-labelling %d training images with %s (T = %g, %s BN)", len(full), path,
                 config.temperature, getattr(model, "branch", "default"))
    pseudo = make_pseudo_labels(model, full, is_labelled=is_labelled,
                                is_validation=is_validation, temperature=config.temperature,
                                batch_size=config.eval_batch_size, teacher=str(path))
    if pseudo.num_classes != config.data.num_classes:
        raise ConfigError(f"The teacher {str(path)!r} predicts {pseudo.num_classes} classes, the "
                          f"config has data.num_classes={config.data.num_classes}.")
    out = save_pseudo_labels(model_dir / PSEUDO_LABEL_FILE, pseudo)
    diagnostics = pseudo.diagnostics()
    logging.info("pseudo-label accuracy %.4f over all %d training images (unlabelled %.4f, "
                 "labelled %.4f, validation %.4f) -> %s", diagnostics["pseudo_label_accuracy"],
                 len(pseudo), diagnostics["pseudo_label_accuracy_unlabelled"],
                 diagnostics["pseudo_label_accuracy_labelled"],
                 diagnostics["pseudo_label_accuracy_validation"], out)
    _update_summary(model_dir, **diagnostics, pseudo_labels=str(out))
    return diagnostics


# -- step iii: the student -----------------------------------------------------------------------
def align_pseudo_labels(pseudo: PseudoLabels, data, where: str) -> PseudoLabels:
    """``pseudo`` reordered to the order of ``data`` (an ImageData), matched by image id."""
    position = {image_id: i for i, image_id in enumerate(data.ids.tolist())}
    unknown = [i for i in pseudo.ids.tolist() if i not in position]
    if unknown or len(pseudo) != len(data):
        raise PseudoLabelError(
            f"{where} labels {len(pseudo)} images but the training data has {len(data)}"
            + (f"; e.g. id {unknown[0]!r} is not in it" if unknown else "")
            + ": make the pseudo-labels from the same data.source / data.limit.")
    order = np.empty(len(data), np.int64)
    order[[position[i] for i in pseudo.ids.tolist()]] = np.arange(len(pseudo))
    aligned = PseudoLabels(ids=pseudo.ids[order], probs=pseudo.probs[order],
                           logits=pseudo.logits[order], labels_true=pseudo.labels_true[order],
                           is_labelled=pseudo.is_labelled[order],
                           is_validation=pseudo.is_validation[order],
                           temperature=pseudo.temperature, teacher=pseudo.teacher)
    if not np.array_equal(aligned.labels_true, data.labels):
        raise PseudoLabelError(f"{where}: 'labels_true' disagree with the training data's labels.")
    return aligned


def _export(classifier, run_dir: Path) -> Optional[str]:
    try:
        from acl_tf.serving.export import export_classifier
    except ImportError as err:
        logging.info("SavedModel export skipped: acl_tf.serving.export is not available (%s)", err)
        return None
    path = export_classifier(classifier, str(run_dir / "saved_model"))
    logging.info("exported the student's best.keras as a SavedModel to %s", path)
    return str(path)


def run_student(config: SemisupConfig, model_dir, pseudo_labels=None, resume: bool = False,
                callbacks: Sequence[keras.callbacks.Callback] = (), verbose="auto",
                strategy=None, resume_dir=None) -> dict:
    """Adversarially trains, selects, tests and exports the student in ``model_dir/student``.

    ``strategy`` and ``resume_dir``: as for :func:`run_teacher` (student batches are always
    full: labelled and unlabelled images in fixed numbers).
    """
    strategy = distribute.resolve_strategy(strategy)
    distribute.check_global_batch(strategy, config.student.batch_size, "student.batch_size")
    model_dir = Path(model_dir)
    source = Path(pseudo_labels) if pseudo_labels else model_dir / PSEUDO_LABEL_FILE
    pseudo = load_pseudo_labels(source)
    full, split = _load_train(config)
    pseudo = align_pseudo_labels(pseudo, full, str(source))
    if not math.isclose(pseudo.temperature, config.temperature):
        raise ConfigError(f"{source} holds soft labels at T={pseudo.temperature:g} but the config "
                          f"has temperature={config.temperature:g}: rerun --step=pseudo_label "
                          "with this temperature.")
    if pseudo.num_classes != config.data.num_classes:
        raise ConfigError(f"{source} has {pseudo.num_classes} classes, the config "
                          f"data.num_classes={config.data.num_classes}.")
    is_labelled, is_validation = split.masks(len(full))
    if not (np.array_equal(is_labelled, pseudo.is_labelled)
            and np.array_equal(is_validation, pseudo.is_validation)):
        raise ConfigError(
            f"{source} was made for another label split ({int(pseudo.is_labelled.sum())} "
            f"labelled, {int(pseudo.is_validation.sum())} validation) than this config's "
            f"({len(split.labelled)} labelled, {len(split.validation)} validation with "
            f"label_fraction={config.label_fraction}, labels_per_class={config.labels_per_class},"
            f" val_size={config.val_size}, seed={config.seed}): use the same settings.")

    run_dir = prepare_run_dir(model_dir / STUDENT_DIR, config, resume)
    keras.utils.set_random_seed(config.seed)
    scfg = config.student
    n_l, n_u, steps = student_batch_sizes(len(split.labelled), len(split.unlabelled),
                                          scfg.batch_size)
    val = full.take(split.validation)
    logging.info("student: adversarial training (%s BN) on %d labelled + %d unlabelled images, "
                 "%d + %d per batch, %d steps/epoch; pseudo-label accuracy on the unlabelled "
                 "images %.4f", STUDENT_BRANCH, len(split.labelled), len(split.unlabelled), n_l,
                 n_u, steps, pseudo.accuracy(pseudo.is_unlabelled))

    with strategy.scope():
        classifier = _build_classifier(config, STUDENT_BRANCH)
        model = SemisupStudent(classifier, alpha=scfg.alpha, temperature=config.temperature,
                               beta=scfg.beta, attack=scfg.attack,
                               distill_weight=scfg.distill_weight,
                               alpha_convention=scfg.alpha_convention, seed=config.seed)
        model.compile(optimizer=build_optimizer(scfg, steps))
    selection = ModelSelection(
        classifier, val.images, val.labels, config.eval_attack, run_dir,
        select_by=scfg.select_by, batch_size=config.eval_batch_size, seed=config.seed,
        info={"role": "student", "bn": STUDENT_BRANCH, "pseudo_labels": str(source),
              "eval_attack_steps": config.eval_attack.steps, **_split_info(config, split)})
    measure, commit = selection.callbacks()

    def make_dataset(epoch):
        dataset, _ = make_student_dataset(full.images, full.labels, pseudo.probs,
                                          split.labelled, split.unlabelled,
                                          batch_size=scfg.batch_size, seed=config.seed,
                                          epoch=epoch, augment=scfg.augment)
        return dataset

    fit_epochs(model, make_dataset, model_dir=run_dir, epochs=scfg.epochs, steps_per_epoch=steps,
               resume_dir=Path(resume_dir) / STUDENT_DIR if resume_dir else None,
               images_per_step=scfg.batch_size, log_every=config.log_every_steps,
               keep_checkpoints=config.keep_checkpoints, resume=resume,
               callbacks=[commit, *callbacks], metric_callbacks=[measure], verbose=verbose)
    selection.catch_up(scfg.epochs)
    record = selection.record
    best = keras.saving.load_model(run_dir / "best.keras", compile=False)
    if config.evaluate_test and "test" not in record:
        from acl_tf.evaluation.robustness import clean_accuracy, pgd_accuracy

        test = _load_test(config)
        x = test.to_float()
        clean = clean_accuracy(best, x, test.labels, batch_size=config.eval_batch_size)
        robust = pgd_accuracy(best, x, test.labels, config.eval_attack,
                              batch_size=config.eval_batch_size, seed=config.seed)
        logging.info("student best.keras (epoch %d) on %d test images: accuracy %.4f, PGD-%d "
                     "accuracy %.4f", record["best_epoch"], clean.num_examples, clean.accuracy,
                     config.eval_attack.steps, robust.accuracy)
        selection.update(test={"acc": clean.accuracy, "adv_acc": robust.accuracy,
                               "count": clean.num_examples, "epoch": record["best_epoch"],
                               "attack": robust.settings})
    if not record.get("finished"):
        selection.update(finished=True, saved_model=_export(best, run_dir))
    summary = {"student_best_epoch": record["best_epoch"],
               "student_val_accuracy": record["best"]["val_acc"],
               "student_val_robust_accuracy": record["best"]["val_adv_acc"],
               "student_saved_model": record.get("saved_model"),
               "robust_attack": f"pgd{config.eval_attack.steps}"}
    if "test" in record:
        summary.update(student_test_accuracy=record["test"]["acc"],
                       student_test_robust_accuracy=record["test"]["adv_acc"])
    _update_summary(model_dir, **summary)
    return record


# -- the routine ---------------------------------------------------------------------------------
def run_semisup(config: SemisupConfig, model_dir, step: str = "all", resume: bool = False,
                teacher: Optional[str] = None, pseudo_labels: Optional[str] = None,
                verbose="auto", strategy=None) -> dict:
    """Runs one step or the whole routine into ``model_dir``; returns ``OUT/metrics.json``.

    Args:
        config: the settings (the encoder architecture follows ``config.pretrained``).
        model_dir: the output directory ``OUT``.
        step: ``all`` (teacher, pseudo_label, student), or one of them alone from the previous
            step's output in ``model_dir``.
        resume: continue interrupted training steps; with ``all``, finished steps are skipped.
        teacher: with ``step="pseudo_label"``, a teacher ``.keras`` file other than
            ``OUT/teacher/best.keras``.
        pseudo_labels: with ``step="student"``, a pseudo-label ``.npz`` other than
            ``OUT/pseudo_labels.npz``.
        strategy: a ``tf.distribute.Strategy`` or its name (None: the default). In a
            multi-worker job the chief writes ``OUT``; every other worker runs the same steps
            into a temporary directory (its teacher, pseudo-labels and student equal the
            chief's) and reads only finished results of earlier runs from ``OUT``.
    """
    step = check_step(step)
    if teacher and step != "pseudo_label":
        raise ConfigError("--teacher is an input of --step=pseudo_label only.")
    if pseudo_labels and step != "student":
        raise ConfigError("--pseudo_labels is an input of --step=student only.")
    if step != "pseudo_label":   # labelling needs the teacher only, not the pre-trained encoder
        config = align_model_config(config)
    strategy = distribute.resolve_strategy(strategy)
    model_dir = Path(model_dir)
    if distribute.is_chief(strategy):
        model_dir.mkdir(parents=True, exist_ok=True)
        write_config(config, model_dir / "config.json")
    with distribute.task_write_dir(model_dir, strategy) as out:
        _run_steps(config, model_dir, out, step, resume, teacher, pseudo_labels, verbose,
                   strategy)
        return read_summary(out)


def _run_steps(config, model_dir: Path, out: Path, step, resume, teacher, pseudo_labels,
               verbose, strategy) -> None:
    """The steps of :func:`run_semisup`, writing into ``out`` (``model_dir`` on the chief)."""
    def earlier(path: Path) -> Path:   # this process's own result, else the chief's earlier one
        return out / path if (out / path).exists() else model_dir / path

    skip = resume and step == "all"
    if step in ("all", "teacher"):
        if skip and _finished(model_dir / TEACHER_DIR):
            logging.info("teacher already finished in %s: skipped", model_dir / TEACHER_DIR)
        else:
            run_teacher(config, out, resume=resume, verbose=verbose, strategy=strategy,
                        resume_dir=model_dir)
    if step in ("all", "pseudo_label"):
        if skip and (model_dir / PSEUDO_LABEL_FILE).exists():
            logging.info("%s exists: skipped", model_dir / PSEUDO_LABEL_FILE)
        else:
            run_pseudo_label(config, out,
                             teacher=teacher or earlier(Path(TEACHER_DIR) / "best.keras"))
    if step in ("all", "student"):
        if resume and _finished(model_dir / STUDENT_DIR):
            logging.info("student already finished in %s: skipped", model_dir / STUDENT_DIR)
        else:
            run_student(config, out, pseudo_labels=pseudo_labels or earlier(
                Path(PSEUDO_LABEL_FILE)), resume=resume, verbose=verbose, strategy=strategy,
                resume_dir=model_dir)
