"""The epoch loop (acl_tf.tasks.fit): resume after a crash, from a legacy run directory and past a
corrupt checkpoint; curves after every epoch (pre-training's too) and what they show; leftovers
of killed saves; the config check."""

import hashlib
import json
import logging

import keras
import numpy as np
import pytest
import tensorflow as tf
from tiny_keras import (
    BATCH,
    STEPS,
    make_dataset,
    tiny_model,
    truncate,
    weights_of,
    write_legacy_run,
)

from acl_tf.configs import PretrainConfig, load_config
from acl_tf.core import run_dir as rd
from acl_tf.core.errors import CheckpointError, RunDirError
from acl_tf.tasks.fit import fit_epochs, prepare_run_dir


@pytest.fixture(autouse=True)
def _warnings_to_caplog(caplog):
    caplog.set_level(logging.WARNING)


class Crash(Exception):
    pass


class CrashAfter(keras.callbacks.Callback):
    """Runs after the checkpoint callback: epoch ``n`` is saved, then the process 'dies'."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.n:
            raise Crash(f"after epoch {self.n}")


def fit(model, model_dir, epochs, **kwargs):
    return fit_epochs(model, make_dataset, model_dir=model_dir, epochs=epochs,
                      steps_per_epoch=STEPS, images_per_step=BATCH, verbose=0, **kwargs)


def history_epochs(model_dir):
    return [h["epoch"] for h in json.loads((model_dir / rd.HISTORY).read_text())]


def assert_same_weights(a, b):
    for x, y in zip(weights_of(a), weights_of(b)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted 3-epoch run: (model, run directory)."""
    model_dir = tmp_path_factory.mktemp("straight")
    model = tiny_model()
    fit(model, model_dir, 3)
    return model, model_dir


def test_resume_after_a_crash_matches_an_uninterrupted_run(straight, tmp_path):
    model = tiny_model()
    with pytest.raises(Crash):
        fit(model, tmp_path, 3, callbacks=[CrashAfter(2)])
    assert rd.checkpoint_numbers(tmp_path) == [1, 2]
    resumed = tiny_model()
    history = fit(resumed, tmp_path, 3, resume=True)
    assert [h["epoch"] for h in history] == [1, 2, 3] == history_epochs(tmp_path)
    assert int(resumed.optimizer.iterations.numpy()) == 3 * STEPS
    assert_same_weights(straight[0], resumed)
    assert rd.checkpoint_numbers(tmp_path) == [1, 2, 3]


def test_curves_are_redrawn_after_every_epoch(tmp_path):
    seen = []

    class Look(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(hashlib.sha1((tmp_path / rd.CURVES).read_bytes()).hexdigest())

    fit(tiny_model(), tmp_path, 3, callbacks=[Look()])
    assert len(seen) == 3 and len(set(seen)) == 3   # a new picture every epoch
    assert history_epochs(tmp_path) == [1, 2, 3]


@pytest.mark.slow
def test_pretraining_draws_its_curves_after_the_first_epoch(tmp_path):
    """The reported case: a 2-epoch pre-training has training_curves.png (of epoch 1) before
    epoch 2 starts, not only after the last epoch."""
    from pretrain_helpers import SAMPLE_DIR, TINY

    from acl_tf.configs import PretrainConfig
    from acl_tf.tasks.pretrain import run_pretraining

    seen = []

    class Look(keras.callbacks.Callback):   # runs after each epoch's checkpoint
        def on_epoch_end(self, epoch, logs=None):
            curves = tmp_path / rd.CURVES
            seen.append((epoch + 1, curves.exists() and curves.stat().st_size > 0,
                         history_epochs(tmp_path)))

    config = load_config(PretrainConfig, "pretrain", "smoke",
                         TINY + [f"data.source={SAMPLE_DIR}", "epochs=2"])
    run_pretraining(config, tmp_path, callbacks=[Look()], verbose=0)
    assert seen == [(1, True, [1]), (2, True, [1, 2])]


def test_a_curve_that_cannot_be_drawn_does_not_stop_training(tmp_path, caplog, monkeypatch):
    import acl_tf.tasks.fit as fit_module

    def broken(*args, **kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr(fit_module, "plot_history", broken)
    history = fit(tiny_model(), tmp_path, 2)
    assert [h["epoch"] for h in history] == [1, 2] and rd.checkpoint_numbers(tmp_path) == [1, 2]
    assert "could not draw training_curves.png: no display" in caplog.text


def test_curves_group_the_metrics_by_kind(tmp_path):
    from acl_tf.tasks.fit import _curve_panels, plot_history

    keys = ["acc", "adv_acc", "loss", "images_per_sec", "val_acc", "val_adv_acc", "lr"]
    assert _curve_panels(keys) == [
        ["loss", "loss", ["loss"]],
        ["accuracy", "accuracy (%)", ["acc", "adv_acc", "val_acc", "val_adv_acc"]],
        ["throughput", "images/s", ["images_per_sec"]],
        ["lr", "lr", ["lr"]]]
    # A metric first logged in a later epoch (e.g. after a resume with more metrics) is drawn.
    history = [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.5, "val_acc": 0.25}]
    plot_history(history, tmp_path / "c.png", title="t")
    assert (tmp_path / "c.png").stat().st_size > 0 and not list(tmp_path.glob("*.tmp.png"))
    plot_history([{"epoch": 1}], tmp_path / "none.png")   # nothing logged: no picture
    assert not (tmp_path / "none.png").exists()


def test_resume_without_a_checkpoint_warns_and_starts_afresh(tmp_path, caplog):
    history = fit(tiny_model(), tmp_path, 2, resume=True)
    assert [h["epoch"] for h in history] == [1, 2]
    assert "holds no checkpoint; starting afresh" in caplog.text


def test_a_legacy_run_directory_resumes(straight, tmp_path, caplog):
    """A run directory written by acl-tf before the contract (positional checkpoints) resumes,
    with a warning, and ends where an uninterrupted run does."""
    write_legacy_run(tiny_model(), tmp_path, epochs=2)
    resumed = tiny_model(seed=11)
    history = fit(resumed, tmp_path, 3, resume=True)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert "legacy positional checkpoint layout" in caplog.text
    assert_same_weights(straight[0], resumed)
    # The new checkpoint is by path; the legacy ones stay until rotated out.
    keys = [k for k, _ in tf.train.list_variables(str(rd.checkpoint_prefix(tmp_path, 3)))]
    assert any(k.startswith("model_variables/") for k in keys)
    assert not any(k.startswith("weights/") for k in keys)


def test_a_truncated_latest_checkpoint_falls_back(straight, tmp_path, caplog):
    fit(tiny_model(), tmp_path, 3)
    data = tmp_path / "checkpoints" / "ckpt-3.data-00000-of-00001"
    truncate(data)
    resumed = tiny_model(seed=3)
    history = fit(resumed, tmp_path, 3, resume=True)
    assert str(data) in caplog.text
    # history.json held epoch 3 of the lost checkpoint: dropped, then trained again.
    assert [h["epoch"] for h in history] == [1, 2, 3] == history_epochs(tmp_path)
    assert_same_weights(straight[0], resumed)
    assert rd.checkpoint_numbers(tmp_path) == [1, 2, 3]


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    fit(tiny_model(units=4), tmp_path, 1)
    with pytest.raises(CheckpointError, match=r"'hidden/kernel' has shape \[3, 5\] in the model"):
        fit(tiny_model(units=5), tmp_path, 2, resume=True)


def test_leftovers_of_a_killed_save_are_removed_on_start(tmp_path, caplog):
    folder = tmp_path / "checkpoints"
    (folder / "ckpt-1_temp").mkdir(parents=True)
    (folder / "ckpt-1_temp" / "part-00000-of-00001.index").write_bytes(b"x")
    fit(tiny_model(), tmp_path, 1)
    assert not list(folder.glob("*_temp*"))
    assert "ckpt-1_temp" in caplog.text
    assert rd.checkpoint_numbers(tmp_path) == [1]


def test_prepare_run_dir_checks_the_typed_config(tmp_path):
    config = load_config(PretrainConfig, "pretrain", "smoke", ["epochs=2"])
    assert prepare_run_dir(tmp_path, config, resume=False) == tmp_path
    assert json.loads((tmp_path / rd.CONFIG).read_text())["epochs"] == 2
    changed = load_config(PretrainConfig, "pretrain", "smoke", ["epochs=3"])
    with pytest.raises(RunDirError, match="field epochs: saved 2, now 3"):
        prepare_run_dir(tmp_path, changed, resume=True)
    assert prepare_run_dir(tmp_path, config, resume=True) == tmp_path
