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
rest (:func:`acl_tf.data.label_split.label_split`); everything else is unlabelled. The student's
batches come from :func:`acl_tf.data.mixing.make_student_dataset`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import keras
import numpy as np
from absl import logging

from acl_tf import distribute
from acl_tf.attacks import PGDConfig
from acl_tf.configs import ConfigError, SemisupConfig, SemisupStep, check_choice, write_config
from acl_tf.core import run_dir as rd
from acl_tf.data import load_split
from acl_tf.data.augment import make_finetune_dataset
from acl_tf.data.label_split import LabelSplit, config_split
from acl_tf.data.mixing import make_student_dataset, student_batch_sizes
from acl_tf.data.pseudo_labels import (
    PseudoLabelError,
    PseudoLabels,
    load_pseudo_labels,
    make_pseudo_labels,
    save_pseudo_labels,
)
from acl_tf.optimizers import build_finetune_optimizer
from acl_tf.serving.export import export_run
from acl_tf.tasks.encoders import align_model_config, build_classifier
from acl_tf.tasks.fit import prepare_run_dir
from acl_tf.tasks.selection import is_finished, read_summary, train_and_select, update_summary
from acl_tf.trainers.semisup import SemisupStudent, TeacherTrainer

TEACHER_BRANCH = "normal"
STUDENT_BRANCH = "adv"
# Model selection of the teacher is on clean accuracy: an attack of 0 steps is the clean image.
_NO_ATTACK = PGDConfig(steps=0, random_start="none")


def check_step(step: str) -> str:
    """The lower-cased step name, or a ConfigError naming the valid ones."""
    return check_choice(SemisupStep, step, "step")


# -- shared by the steps -------------------------------------------------------------------------
def _split_info(config: SemisupConfig, split: LabelSplit) -> dict:
    return {"label_fraction": config.label_fraction, "labels_per_class": config.labels_per_class,
            "num_labelled": int(len(split.labelled)),
            "num_unlabelled": int(len(split.unlabelled)),
            "num_validation": int(len(split.validation)), "pretrained": config.pretrained}


def _load_train(config: SemisupConfig):
    full = load_split(config.data, config.data.train_split, config.data.limit)
    return full, config_split(config, full.labels)


def _load_test(config: SemisupConfig):
    return load_split(config.data, config.data.test_split)


# -- step ii: the teacher ------------------------------------------------------------------------
@rd.cleanup_on_failure()
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
    run_dir = prepare_run_dir(model_dir / rd.TEACHER, config, resume)
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
        model = TeacherTrainer(build_classifier(config, TEACHER_BRANCH))
        model.compile(optimizer=build_finetune_optimizer(tcfg.optimizer, steps))

    def make_dataset(epoch):
        return make_finetune_dataset(labelled.images, labelled.labels,
                                     batch_size=tcfg.batch_size, seed=config.seed, epoch=epoch,
                                     augment=tcfg.augment, drop_remainder=even)

    selection = train_and_select(
        model, make_dataset, val, run_dir, config=config, attack=_NO_ATTACK, epochs=tcfg.epochs,
        steps_per_epoch=steps, batch_size=tcfg.batch_size, select_by="clean", resume=resume,
        resume_dir=Path(resume_dir) / rd.TEACHER if resume_dir else None, callbacks=callbacks,
        verbose=verbose,
        info={"role": "teacher", "bn": TEACHER_BRANCH, **_split_info(config, split)})
    record = selection.record
    summary = {"teacher_best_epoch": record["best_epoch"],
               "teacher_val_accuracy": record["best"]["val_acc"]}
    if config.evaluate_test and "test" not in record:
        from acl_tf.evaluation.robustness import clean_accuracy

        best = selection.load_best()
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
    update_summary(model_dir, **summary, **_split_info(config, split))
    return selection.record


# -- pseudo-labels -------------------------------------------------------------------------------
def teacher_file(model_dir, teacher=None) -> Path:
    """The teacher classifier to label with: ``teacher`` or ``model_dir/teacher/best.keras``."""
    path = Path(teacher) if teacher else Path(model_dir) / rd.TEACHER / rd.BEST
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
    out = save_pseudo_labels(model_dir / rd.PSEUDO_LABELS, pseudo)
    diagnostics = pseudo.diagnostics()
    logging.info("pseudo-label accuracy %.4f over all %d training images (unlabelled %.4f, "
                 "labelled %.4f, validation %.4f) -> %s", diagnostics["pseudo_label_accuracy"],
                 len(pseudo), diagnostics["pseudo_label_accuracy_unlabelled"],
                 diagnostics["pseudo_label_accuracy_labelled"],
                 diagnostics["pseudo_label_accuracy_validation"], out)
    update_summary(model_dir, **diagnostics, pseudo_labels=str(out))
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


@rd.cleanup_on_failure()
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
    source = Path(pseudo_labels) if pseudo_labels else model_dir / rd.PSEUDO_LABELS
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

    run_dir = prepare_run_dir(model_dir / rd.STUDENT, config, resume)
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
        model = SemisupStudent(build_classifier(config, STUDENT_BRANCH), alpha=scfg.alpha,
                               temperature=config.temperature, beta=scfg.beta,
                               attack=scfg.attack, distill_weight=scfg.distill_weight,
                               alpha_convention=scfg.alpha_convention, seed=config.seed)
        model.compile(optimizer=build_finetune_optimizer(scfg.optimizer, steps))

    def make_dataset(epoch):
        dataset, _ = make_student_dataset(full.images, full.labels, pseudo.probs,
                                          split.labelled, split.unlabelled,
                                          batch_size=scfg.batch_size, seed=config.seed,
                                          epoch=epoch, augment=scfg.augment)
        return dataset

    selection = train_and_select(
        model, make_dataset, val, run_dir, config=config, attack=config.eval_attack,
        epochs=scfg.epochs, steps_per_epoch=steps, batch_size=scfg.batch_size,
        select_by=scfg.select_by, resume=resume,
        resume_dir=Path(resume_dir) / rd.STUDENT if resume_dir else None, callbacks=callbacks,
        verbose=verbose,
        info={"role": "student", "bn": STUDENT_BRANCH, "pseudo_labels": str(source),
              "eval_attack_steps": config.eval_attack.steps, **_split_info(config, split)})
    record = selection.record
    best = selection.load_best()
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
        selection.update(finished=True,
                         saved_model=export_run(best, run_dir, "the student's best.keras"))
    summary = {"student_best_epoch": record["best_epoch"],
               "student_val_accuracy": record["best"]["val_acc"],
               "student_val_robust_accuracy": record["best"]["val_adv_acc"],
               "student_saved_model": record.get("saved_model"),
               "robust_attack": f"pgd{config.eval_attack.steps}"}
    if "test" in record:
        summary.update(student_test_accuracy=record["test"]["acc"],
                       student_test_robust_accuracy=record["test"]["adv_acc"])
    update_summary(model_dir, **summary)
    return record


# -- the routine ---------------------------------------------------------------------------------
@rd.cleanup_on_failure()
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
        rd.make_dir(model_dir)
        write_config(config, model_dir / rd.CONFIG)
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
        if skip and is_finished(model_dir / rd.TEACHER):
            logging.info("teacher already finished in %s: skipped", model_dir / rd.TEACHER)
        else:
            run_teacher(config, out, resume=resume, verbose=verbose, strategy=strategy,
                        resume_dir=model_dir)
    if step in ("all", "pseudo_label"):
        if skip and (model_dir / rd.PSEUDO_LABELS).exists():
            logging.info("%s exists: skipped", model_dir / rd.PSEUDO_LABELS)
        else:
            run_pseudo_label(config, out,
                             teacher=teacher or earlier(Path(rd.TEACHER) / rd.BEST))
    if step in ("all", "student"):
        if resume and is_finished(model_dir / rd.STUDENT):
            logging.info("student already finished in %s: skipped", model_dir / rd.STUDENT)
        else:
            run_student(config, out, pseudo_labels=pseudo_labels or earlier(
                Path(rd.PSEUDO_LABELS)), resume=resume, verbose=verbose, strategy=strategy,
                resume_dir=model_dir)
