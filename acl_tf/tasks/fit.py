"""What every training job shares: the run directory, checkpoints, progress, NaN guard, curves.

A run directory holds ``config.json`` (the resolved config), ``checkpoints/`` (written every epoch
by ``tf.train.CheckpointManager``, whose state file is replaced atomically, so a crash while writing
leaves the previous checkpoint in force), ``logs/`` (TensorBoard), ``history.json`` and
``training_curves.png``. :func:`fit_epochs` trains epoch by epoch from the last checkpoint, each
epoch on a dataset built for that epoch index, so a resumed run sees exactly the data an
uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from acl_tf.configs import read_config, write_config
from acl_tf.core.errors import NonFiniteLossError, RunDirError  # noqa: F401 (re-exported)


def prepare_run_dir(model_dir, config, resume: bool, write: bool = True):
    """Creates ``model_dir`` and writes ``config.json``.

    Refuses to start afresh over existing checkpoints (nothing finished is lost): pass
    ``resume=True`` to continue them. On resume the saved config must equal ``config``.
    With ``write=False`` (a non-chief worker of a multi-worker job) it only runs these checks,
    so every worker fails alike, and writes nothing.
    """
    model_dir = Path(model_dir)
    if not write:
        return _check_run_dir(model_dir, config, resume)
    model_dir.mkdir(parents=True, exist_ok=True)
    config_file = model_dir / "config.json"
    has_checkpoint = tf.train.latest_checkpoint(str(model_dir / "checkpoints")) is not None
    if has_checkpoint and not resume:
        raise RunDirError(f"{model_dir} already holds checkpoints; pass --resume to continue "
                          "that run or choose another --model_dir.")
    if resume and config_file.exists():
        saved = read_config(type(config), config_file)
        if saved != config:
            raise RunDirError(f"--resume: the config differs from {config_file}; resume with the "
                              f"same config (saved: {json.dumps(dataclasses.asdict(saved))}).")
    write_config(config, config_file)
    return model_dir


def _check_run_dir(model_dir: Path, config, resume: bool) -> Path:
    """The checks of :func:`prepare_run_dir` without creating or writing anything."""
    config_file = model_dir / "config.json"
    if tf.train.latest_checkpoint(str(model_dir / "checkpoints")) is not None and not resume:
        raise RunDirError(f"{model_dir} already holds checkpoints; pass --resume to continue "
                          "that run or choose another --model_dir.")
    if resume and config_file.exists() and read_config(type(config), config_file) != config:
        raise RunDirError(f"--resume: the config differs from {config_file}; resume with the "
                          "same config.")
    return model_dir


class EpochCheckpoint(keras.callbacks.Callback):
    """At the end of every epoch: appends the logs to ``history.json``, then saves model,
    optimizer and the epoch counter (history first: on resume, entries past the checkpoint are
    dropped)."""

    def __init__(self, manager: tf.train.CheckpointManager, epoch_var: tf.Variable,
                 model_dir, history: list):
        super().__init__()
        self.manager, self.epoch_var = manager, epoch_var
        self.model_dir, self.history = model_dir, history

    def on_epoch_end(self, epoch, logs=None):
        self.history.append({"epoch": epoch + 1,
                             **{k: float(v) for k, v in (logs or {}).items()}})
        save_history(self.model_dir, self.history)
        self.epoch_var.assign(epoch + 1)
        path = self.manager.save(checkpoint_number=epoch + 1)
        logging.info("epoch %d: checkpoint %s", epoch + 1, path)


class ProgressLogger(keras.callbacks.Callback):
    """Logs a line every ``every`` steps with the loss, images/s and ETA; TensorBoard images/s."""

    def __init__(self, images_per_step: int, steps_per_epoch: int, total_epochs: int,
                 every: int = 50, writer=None):
        super().__init__()
        self.images_per_step, self.steps_per_epoch = images_per_step, steps_per_epoch
        self.total_epochs, self.every, self.writer = total_epochs, max(1, every), writer
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.epoch_start, self.mark, self.mark_step = epoch, time.time(), None, 0

    def on_train_batch_end(self, batch, logs=None):
        step = batch + 1
        if self.mark is None:  # the first step includes tracing: time from its end
            self.mark, self.mark_step = time.time(), step
            return
        if step % self.every and step != self.steps_per_epoch:
            return
        elapsed = time.time() - self.mark
        rate = (step - self.mark_step) * self.images_per_step / max(elapsed, 1e-9)
        remaining = ((self.total_epochs - self.epoch - 1) * self.steps_per_epoch
                     + self.steps_per_epoch - step)
        eta = remaining * self.images_per_step / max(rate, 1e-9)
        loss = (logs or {}).get("loss", float("nan"))
        logging.info("epoch %d/%d step %d/%d loss %.4f  %.1f images/s  ETA %s",
                     self.epoch + 1, self.total_epochs, step, self.steps_per_epoch, float(loss),
                     rate, time.strftime("%H:%M:%S", time.gmtime(eta)))
        self.last_rate = rate

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.time() - self.epoch_start
        rate = self.steps_per_epoch * self.images_per_step / max(seconds, 1e-9)
        if logs is not None:
            logs["images_per_sec"] = rate
        if self.writer is not None:
            with self.writer.as_default():
                tf.summary.scalar("images_per_sec", rate, step=epoch + 1)


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops training with :class:`NonFiniteLossError` naming the epoch and step."""

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                f"Loss became {float(loss)} at epoch {self.epoch + 1}, step {batch + 1}; "
                "lower the learning rate or check the input data. The last good checkpoint is kept.")


def save_history(model_dir, history: list) -> None:
    path = Path(model_dir) / "history.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(history, indent=1) + "\n")
    os.replace(tmp, path)


def load_history(model_dir) -> list:
    path = Path(model_dir) / "history.json"
    return json.loads(path.read_text()) if path.exists() else []


def plot_history(history: list, path, title: str = "") -> None:
    """Writes one panel per logged metric against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in history[0] if k != "epoch"] if history else []
    if not keys:
        return
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    epochs = [h["epoch"] for h in history]
    for ax, key in zip(axes.flat, keys):
        ax.plot(epochs, [h.get(key, np.nan) for h in history], marker="o")
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    tmp = str(path) + ".tmp.png"
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)


def fit_epochs(model: keras.Model, make_dataset: Callable[[int], tf.data.Dataset], *, model_dir,
               epochs: int, steps_per_epoch: int, images_per_step: int, log_every: int = 50,
               keep_checkpoints: int = 3, resume: bool = False,
               callbacks: Sequence[keras.callbacks.Callback] = (), verbose="auto",
               extra_trackables: Optional[dict] = None,
               metric_callbacks: Sequence[keras.callbacks.Callback] = (),
               resume_dir=None) -> list:
    """Trains a compiled ``model`` epoch by epoch with checkpoints; returns the history.

    ``make_dataset(epoch)`` returns that epoch's dataset. With ``resume`` the latest checkpoint
    in ``model_dir/checkpoints`` is restored (weights, optimizer state, step and epoch counters)
    and training continues at the next epoch.

    ``metric_callbacks`` run at the end of each epoch *before* TensorBoard and the checkpoint:
    values they add to the epoch's ``logs`` (e.g. validation accuracies) land in TensorBoard and
    ``history.json``. ``callbacks`` run after the checkpoint.

    ``resume_dir`` (default ``model_dir``) is the run directory whose checkpoint and history a
    resumed run starts from: a non-chief worker of a multi-worker job writes into a temporary
    ``model_dir`` but resumes from the chief's directory.
    """
    model_dir = Path(model_dir)
    resume_dir = Path(resume_dir) if resume_dir is not None else model_dir
    epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    # Optimizer slots exist only after build(): build them so a restore fills them in place
    # (inside the model's distribution strategy, so that they are mirrored like the weights).
    with model.distribute_strategy.scope():
        model.optimizer.build(model.trainable_variables)
    # Flat variable lists, matched by position: Keras 3 hides layers kept in Python lists from
    # TF's object graph (only SavedModel export sees them), so ``Checkpoint(model=model)`` would
    # silently skip most weights and BN statistics.
    checkpoint = tf.train.Checkpoint(weights=list(model.weights),
                                     optimizer_variables=list(model.optimizer.variables),
                                     epoch=epoch_var, **(extra_trackables or {}))
    manager = tf.train.CheckpointManager(checkpoint, str(model_dir / "checkpoints"),
                                         max_to_keep=keep_checkpoints)
    history = []
    latest = tf.train.latest_checkpoint(str(resume_dir / "checkpoints")) if resume else None
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
        history = [h for h in load_history(resume_dir) if h["epoch"] <= int(epoch_var.numpy())]
        logging.info("resumed from %s at epoch %d", latest, int(epoch_var.numpy()))
    start = int(epoch_var.numpy())
    writer = tf.summary.create_file_writer(str(model_dir / "logs" / "train"))
    all_callbacks = [NonFiniteGuard(),
                     ProgressLogger(images_per_step, steps_per_epoch, epochs, log_every, writer),
                     *metric_callbacks,
                     keras.callbacks.TensorBoard(str(model_dir / "logs"), write_graph=False),
                     EpochCheckpoint(manager, epoch_var, model_dir, history), *callbacks]
    for epoch in range(start, epochs):
        model.fit(make_dataset(epoch), initial_epoch=epoch, epochs=epoch + 1,
                  steps_per_epoch=steps_per_epoch, callbacks=all_callbacks, verbose=verbose)
    writer.close()
    if history:
        plot_history(history, model_dir / "training_curves.png", title=model_dir.name)
    return history


def save_keras_atomic(model: keras.Model, path) -> None:
    """``model.save(path)`` through a temporary file, so a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)
