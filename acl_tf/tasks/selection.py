"""Per-epoch validation and model selection for fine-tuning and semi-supervised training.

:func:`validation_accuracy` measures the clean accuracy and the accuracy under an L-inf PGD
attack (PGD-20 on the cross-entropy, uniform start, BN in inference mode) of a classifier on
in-memory images with :mod:`acl_tf.evaluation.robustness`.

:class:`ModelSelection` runs it after every epoch and keeps, in the run directory:

* ``last.keras``: the classifier after the latest epoch;
* ``best.keras``: the classifier of the epoch with the highest robust (or clean) validation
  accuracy, ties going to the earlier epoch;
* ``metrics.json``: per-epoch validation accuracies, the best epoch and, once written by the
  runner, the test accuracies of ``best.keras``.

Crash safety: the measurement runs *before* the epoch's checkpoint (its ``val_acc`` /
``val_adv_acc`` then also land in ``history.json`` and TensorBoard); the files above are written
*after* it, each atomically, ``metrics.json`` last. A run resumed from the checkpoint of epoch N
whose ``metrics.json`` lacks epoch N re-measures the restored weights (the same as epoch N's:
the measurement is deterministic) before training on, so the files always describe the epochs
that the checkpoints hold.

:func:`train_and_select` is the training loop of every run that selects a classifier this way
(fine-tuning, the semi-supervised teacher and student): :func:`acl_tf.tasks.fit.fit_epochs` with
a :class:`ModelSelection`. The semi-supervised routine also keeps a summary of all its steps in
its own ``metrics.json`` (:func:`read_summary`, :func:`update_summary`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import keras
import numpy as np
from absl import logging

from acl_tf.attacks import PGDConfig
from acl_tf.core import run_dir as rd
from acl_tf.core.io import write_json_atomic
from acl_tf.tasks.fit import fit_epochs, save_keras_atomic


def validation_accuracy(model, images, labels, attack: PGDConfig, branch: Optional[str] = None,
                        batch_size: int = 256, seed: int = 0) -> dict:
    """Clean accuracy and PGD accuracy of ``model`` on in-memory data, in [0, 1].

    A thin wrapper of :func:`acl_tf.evaluation.robustness.clean_accuracy` and
    :func:`~acl_tf.evaluation.robustness.pgd_accuracy` (cross-entropy PGD, BN in inference mode,
    stateless per-batch seeds, so the figure is reproducible; an example counts as robust when it
    is classified correctly both clean and attacked), taking uint8 images.

    Args:
        model: called as ``model(x, training=False, branch=branch)`` (a Classifier).
        images: uint8 [N, H, W, 3] (or float in [0, 1]); labels: int [N].
        attack: the PGD settings (PGD-20, uniform start for the reference's RA).
        branch: BN branch (None: the model's default).
        batch_size: evaluation batch size.
        seed: seed of the attack's random starts.

    Returns:
        ``{"acc": clean accuracy, "adv_acc": accuracy under the attack, "count": N}``.
    """
    from acl_tf.evaluation.robustness import clean_accuracy, pgd_accuracy

    images, labels = np.asarray(images), np.asarray(labels)
    if len(images) == 0:
        raise ValueError("validation_accuracy needs at least one image.")
    x = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images
    clean = clean_accuracy(model, x, labels, branch=branch, batch_size=batch_size)
    robust = pgd_accuracy(model, x, labels, attack, branch=branch, batch_size=batch_size,
                          seed=seed)
    return {"acc": clean.accuracy, "adv_acc": robust.accuracy, "count": len(images)}


def read_metrics(model_dir) -> dict:
    """The run's ``metrics.json`` (an empty record if there is none yet)."""
    path = Path(model_dir) / rd.METRICS
    if not path.exists():
        return {"epochs": []}
    return json.loads(path.read_text())


def is_finished(run_dir) -> bool:
    """Whether the run in ``run_dir`` recorded in its ``metrics.json`` that it finished."""
    return bool(read_metrics(run_dir).get("finished"))


def read_summary(model_dir) -> dict:
    """The summary ``metrics.json`` of a multi-step run directory (semi-supervised ``OUT``; empty
    if no step has finished yet)."""
    path = Path(model_dir) / rd.METRICS
    return json.loads(path.read_text()) if path.exists() else {}


def update_summary(model_dir, **fields) -> dict:
    """Adds ``fields`` to the summary ``metrics.json`` of ``model_dir`` (written atomically);
    returns the new summary."""
    summary = {**read_summary(model_dir), **fields}
    write_json_atomic(Path(model_dir) / rd.METRICS, summary)
    return summary


class ModelSelection:
    """Validation after every epoch; ``best.keras`` / ``last.keras`` / ``metrics.json``.

    Args:
        classifier: the model being fine-tuned (what ``best.keras`` and ``last.keras`` hold).
        images, labels: the validation split (uint8 images).
        attack: PGD of the robust validation accuracy (PGD-20).
        model_dir: the run directory.
        select_by: ``robust`` (highest ``val_adv_acc``) or ``clean`` (highest ``val_acc``).
        batch_size, seed: see :func:`validation_accuracy`.
        info: extra fields recorded at the top of ``metrics.json`` (mode, branch, ...).

    Use :meth:`callbacks` with :func:`acl_tf.tasks.fit.fit_epochs` and call
    :meth:`catch_up` with the number of finished epochs after it returns.
    """

    def __init__(self, classifier, images, labels, attack: PGDConfig, model_dir,
                 select_by: str = "robust", batch_size: int = 256, seed: int = 0,
                 info: Optional[dict] = None):
        if select_by not in ("robust", "clean"):
            raise ValueError(f"select_by must be 'robust' or 'clean', got {select_by!r}.")
        self.classifier = classifier
        self.images, self.labels = images, labels
        self.attack, self.batch_size, self.seed = attack, batch_size, seed
        self.model_dir = Path(model_dir)
        self.key = "val_adv_acc" if select_by == "robust" else "val_acc"
        self.record = read_metrics(model_dir)
        self.record.update(info or {}, select_by=self.key)
        self.pending: dict = {}

    # -- measuring and committing --------------------------------------------------------------
    def measure(self, epoch: int) -> dict:
        """Validation accuracies of the classifier as it is now, recorded as ``epoch``."""
        result = validation_accuracy(self.classifier, self.images, self.labels, self.attack,
                                     batch_size=self.batch_size, seed=self.seed)
        values = {"val_acc": result["acc"], "val_adv_acc": result["adv_acc"]}
        self.pending[epoch] = values
        logging.info("epoch %d: validation accuracy %.4f, PGD-%d accuracy %.4f (%d images)",
                     epoch, values["val_acc"], self.attack.steps, values["val_adv_acc"],
                     result["count"])
        return values

    def commit(self, epoch: int) -> None:
        """Writes ``last.keras``, ``best.keras`` (if ``epoch`` is the best) and ``metrics.json``."""
        if epoch not in self.pending:
            self.measure(epoch)
        values = self.pending.pop(epoch)
        epochs = [e for e in self.record["epochs"] if e["epoch"] < epoch]
        epochs.append({"epoch": epoch, **values})
        best = self.record.get("best")
        if best is not None and best["epoch"] >= epoch:  # recorded by a run that was rolled back
            best = max(epochs[:-1], key=lambda e: e[self.key], default=None)
        save_keras_atomic(self.classifier, self.model_dir / rd.LAST)
        if best is None or values[self.key] > best[self.key]:
            save_keras_atomic(self.classifier, self.model_dir / rd.BEST)
            best = epochs[-1]
            logging.info("epoch %d: new best %s %.4f -> best.keras", epoch, self.key,
                         values[self.key])
        self.record.update(epochs=epochs, best=best, best_epoch=best["epoch"])
        write_json_atomic(self.model_dir / rd.METRICS, self.record)

    def catch_up(self, finished_epochs: int) -> None:
        """Commits epoch ``finished_epochs`` if a crash left it uncommitted (weights restored)."""
        committed = [e["epoch"] for e in self.record["epochs"]]
        if finished_epochs > 0 and finished_epochs not in committed:
            logging.info("epoch %d finished without model selection: measuring it now",
                         finished_epochs)
            self.commit(finished_epochs)

    def update(self, **fields) -> None:
        """Adds top-level fields (e.g. the test accuracies) to ``metrics.json``."""
        self.record.update(fields)
        write_json_atomic(self.model_dir / rd.METRICS, self.record)

    def load_best(self):
        """The classifier in ``best.keras``."""
        return keras.saving.load_model(self.model_dir / rd.BEST, compile=False)

    def callbacks(self):
        """(measure, commit) callbacks: pass the first in ``fit_epochs(metric_callbacks=...)``
        (before the checkpoint), the second in ``fit_epochs(callbacks=...)`` (after it)."""
        return _Measure(self), _Commit(self)


def train_and_select(model, make_dataset, val, run_dir, *, config, attack: PGDConfig,
                     epochs: int, steps_per_epoch: int, batch_size: int,
                     select_by: str = "robust", info: Optional[dict] = None,
                     resume: bool = False, resume_dir=None,
                     callbacks: Sequence[keras.callbacks.Callback] = (),
                     verbose="auto") -> ModelSelection:
    """Trains ``model`` (a trainer of ``model.classifier``) with model selection after every
    epoch; returns the :class:`ModelSelection`, caught up with the finished epochs.

    Args:
        model: the compiled trainer; its ``classifier`` is what is measured and saved.
        make_dataset: ``make_dataset(epoch)`` -> that epoch's training dataset.
        val: the validation split (an :class:`acl_tf.data.ImageData`, uint8 images).
        run_dir: the directory written (checkpoints, logs, ``best.keras``, ...).
        config: the run's config, for ``eval_batch_size``, ``seed``, ``log_every_steps`` and
            ``keep_checkpoints``.
        attack: the validation attack (``PGDConfig(steps=0, random_start="none")``: clean).
        epochs, steps_per_epoch: the training length.
        batch_size: images per step (for the progress log).
        select_by, info: see :class:`ModelSelection`.
        resume, resume_dir, callbacks, verbose: see :func:`acl_tf.tasks.fit.fit_epochs` (the
            ``callbacks`` run after each epoch's checkpoint and model selection).
    """
    selection = ModelSelection(model.classifier, val.images, val.labels, attack, run_dir,
                               select_by=select_by, batch_size=config.eval_batch_size,
                               seed=config.seed, info=info)
    measure, commit = selection.callbacks()
    fit_epochs(model, make_dataset, model_dir=run_dir, resume_dir=resume_dir, epochs=epochs,
               steps_per_epoch=steps_per_epoch, images_per_step=batch_size,
               log_every=config.log_every_steps, keep_checkpoints=config.keep_checkpoints,
               resume=resume, callbacks=[commit, *callbacks], metric_callbacks=[measure],
               verbose=verbose)
    selection.catch_up(epochs)  # a crash after the last checkpoint
    return selection


class _Measure(keras.callbacks.Callback):
    def __init__(self, selection: ModelSelection):
        super().__init__()
        self.selection = selection

    def on_epoch_end(self, epoch, logs=None):
        values = self.selection.measure(epoch + 1)
        if logs is not None:
            logs.update(values)


class _Commit(keras.callbacks.Callback):
    def __init__(self, selection: ModelSelection):
        super().__init__()
        self.selection = selection

    def on_epoch_begin(self, epoch, logs=None):
        self.selection.catch_up(epoch)  # weights are those of the finished epoch `epoch`

    def on_epoch_end(self, epoch, logs=None):
        self.selection.commit(epoch + 1)
