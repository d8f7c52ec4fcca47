"""What every training job shares: the run directory, checkpoints, progress, NaN guard, curves.

The run directory follows :mod:`acl_tf.core.run_dir`: ``config.json`` (the resolved config),
``checkpoints/`` (one per epoch, each variable saved under its Keras path and checked before a
restore: :mod:`acl_tf.tasks.checkpoint`), ``logs/`` (TensorBoard), ``history.json`` and
``training_curves.png`` (both rewritten after every epoch). :func:`fit_epochs` trains epoch by
epoch from the last checkpoint, each epoch on a dataset built for that epoch index, so a resumed
run sees exactly the data an uninterrupted one would.
"""

from __future__ import annotations

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
from acl_tf.core import run_dir as rd
from acl_tf.core.errors import CheckpointError, NonFiniteLossError, RunDirError  # noqa: F401
from acl_tf.core.io import write_json_atomic
from acl_tf.tasks.checkpoint import ModelCheckpoint


def prepare_run_dir(model_dir, config, resume: bool, write: bool = True) -> Path:
    """Checks ``model_dir`` for a run of ``config``, creates it and writes ``config.json``
    (:func:`acl_tf.core.run_dir.prepare`).

    Refuses to start afresh over existing checkpoints (nothing finished is lost): pass
    ``resume=True`` to continue them. On resume the saved config must equal ``config``.
    With ``write=False`` (a non-chief worker of a multi-worker job) it only runs these checks,
    so every worker fails alike, and writes nothing.
    """
    return rd.prepare(model_dir, config, resume, write=write, write_config=write_config,
                      read_config=lambda path: read_config(type(config), path))


class EpochCheckpoint(keras.callbacks.Callback):
    """At the end of every epoch: appends the logs to ``history.json``, saves model, optimizer
    and the epoch counter, then redraws ``training_curves.png`` (history first: on resume,
    entries past the checkpoint are dropped)."""

    def __init__(self, saver: ModelCheckpoint, epoch_var: tf.Variable, model_dir,
                 history: list):
        super().__init__()
        self.saver, self.epoch_var = saver, epoch_var
        self.model_dir, self.history = Path(model_dir), history

    def on_epoch_end(self, epoch, logs=None):
        self.history.append({"epoch": epoch + 1,
                             **{k: float(v) for k, v in (logs or {}).items()}})
        save_history(self.model_dir, self.history)
        self.epoch_var.assign(epoch + 1)
        path = self.saver.save(epoch + 1)
        logging.info("epoch %d: checkpoint %s", epoch + 1, path)
        try:   # a picture that cannot be drawn must not stop the training
            plot_history(self.history, self.model_dir / rd.CURVES, title=self.model_dir.name)
        except Exception as err:  # noqa: BLE001
            logging.warning("epoch %d: could not draw %s: %s", epoch + 1, rd.CURVES, err)


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
    write_json_atomic(Path(model_dir) / rd.HISTORY, history, indent=1)


def load_history(model_dir) -> list:
    path = Path(model_dir) / rd.HISTORY
    return json.loads(path.read_text()) if path.exists() else []


#: Panels of :func:`plot_history`: (title, y label, test on a metric name), in this order; a
#: metric goes to the first panel that takes it, the rest get a panel each.
CURVE_PANELS = (
    ("loss", "loss", lambda key: "loss" in key),
    ("accuracy", "accuracy (%)", lambda key: key.endswith("acc") or key.endswith("accuracy")),
    ("throughput", "images/s", lambda key: key == "images_per_sec"),
)


def _curve_panels(keys: Sequence[str]) -> list:
    """[(title, y label, [keys])] for :func:`plot_history`: the metrics grouped by kind."""
    panels, rest = [[title, label, []] for title, label, _ in CURVE_PANELS], []
    for key in keys:
        for (_, _, takes), panel in zip(CURVE_PANELS, panels):
            if takes(key):
                panel[2].append(key)
                break
        else:
            rest.append([key, key, [key]])
    return [p for p in panels if p[2]] + rest


def plot_history(history: list, path, title: str = "") -> None:
    """Writes the logged metrics against the epoch (integer ticks): one panel for the losses,
    one for the accuracies (in %, training solid, validation dashed), one for images/s, one for
    each other metric. Written through a temporary file, so a reader never sees half a PNG."""
    # A bare Figure (no pyplot): drawn off-screen without touching matplotlib's global backend,
    # so a notebook that trains keeps its inline plots.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    keys = list(dict.fromkeys(k for h in history for k in h if k != "epoch"))
    if not keys:
        return
    panels = _curve_panels(keys)
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(3.8 * cols, 3 * rows + 0.4))
    axes = fig.subplots(rows, cols, squeeze=False)
    epochs = [h["epoch"] for h in history]
    for ax, (name, label, names) in zip(axes.flat, panels):
        scale = 100 if label.endswith("(%)") else 1
        bases = list(dict.fromkeys(k.removeprefix("val_") for k in names))
        for key in names:   # val_x dashed, in the colour of x
            values = [scale * h[key] if h.get(key) is not None else np.nan for h in history]
            ax.plot(epochs, values, marker="o", markersize=4, label=key,
                    color=f"C{bases.index(key.removeprefix('val_')) % 10}",
                    linestyle="--" if key.startswith("val_") else "-")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if len(names) > 1:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = str(path) + ".tmp.png"
    fig.savefig(tmp, dpi=90)
    os.replace(tmp, path)


def fit_epochs(model: keras.Model, make_dataset: Callable[[int], tf.data.Dataset], *, model_dir,
               epochs: int, steps_per_epoch: int, images_per_step: int, log_every: int = 50,
               keep_checkpoints: int = 3, resume: bool = False,
               callbacks: Sequence[keras.callbacks.Callback] = (), verbose="auto",
               extra_trackables: Optional[dict] = None,
               metric_callbacks: Sequence[keras.callbacks.Callback] = (),
               resume_dir=None) -> list:
    """Trains a compiled ``model`` epoch by epoch with checkpoints; returns the history.

    ``make_dataset(epoch)`` returns that epoch's dataset. With ``resume`` the latest readable
    checkpoint in ``resume_dir/checkpoints`` is checked against the model and restored (weights,
    optimizer state, step and epoch counters) and training continues at the next epoch; a
    corrupt latest checkpoint falls back to the one before, a mismatching one is a
    :class:`CheckpointError`, none at all a warning and a fresh start.

    ``metric_callbacks`` run at the end of each epoch *before* TensorBoard and the checkpoint:
    values they add to the epoch's ``logs`` (e.g. validation accuracies) land in TensorBoard and
    ``history.json``. ``callbacks`` run after the checkpoint.

    ``resume_dir`` (default ``model_dir``) is the run directory whose checkpoint and history a
    resumed run starts from: a non-chief worker of a multi-worker job writes into a temporary
    ``model_dir`` but resumes from the chief's directory.
    """
    model_dir = Path(model_dir)
    resume_dir = Path(resume_dir) if resume_dir is not None else model_dir
    rd.remove_partial_saves(model_dir)   # a save killed midway
    epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    saver = ModelCheckpoint(model, epoch_var, model_dir, keep=keep_checkpoints,
                            extra_trackables=extra_trackables)
    history = []
    restored = saver.restore_latest(resume_dir) if resume else None
    if restored is not None:
        history = [h for h in load_history(resume_dir) if h["epoch"] <= int(epoch_var.numpy())]
        logging.info("resumed from %s at epoch %d", rd.checkpoint_prefix(resume_dir, restored),
                     int(epoch_var.numpy()))
    start = int(epoch_var.numpy())
    writer = tf.summary.create_file_writer(str(model_dir / rd.LOGS / "train"))
    all_callbacks = [NonFiniteGuard(),
                     ProgressLogger(images_per_step, steps_per_epoch, epochs, log_every, writer),
                     *metric_callbacks,
                     keras.callbacks.TensorBoard(str(model_dir / rd.LOGS), write_graph=False),
                     EpochCheckpoint(saver, epoch_var, model_dir, history), *callbacks]
    for epoch in range(start, epochs):
        model.fit(make_dataset(epoch), initial_epoch=epoch, epochs=epoch + 1,
                  steps_per_epoch=steps_per_epoch, callbacks=all_callbacks, verbose=verbose)
    writer.close()
    if history and start >= epochs:   # nothing left to train: the curves of the finished run
        plot_history(history, model_dir / rd.CURVES, title=model_dir.name)
    return history


def save_keras_atomic(model: keras.Model, path) -> None:
    """``model.save(path)`` through a temporary file, so a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)
