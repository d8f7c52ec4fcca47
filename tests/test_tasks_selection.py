"""Per-epoch validation and model selection (acl_tf.tasks.selection): validation accuracy,
best.keras / last.keras / metrics.json, catch-up after a crash, the training loop that selects,
the multi-step summary file."""

import json
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

from acl_tf.attacks import PGDConfig
from acl_tf.data import ImageData
from acl_tf.models import Classifier, ResNet18
from acl_tf.optimizers import SGDL2
from acl_tf.tasks.selection import (
    ModelSelection,
    is_finished,
    read_metrics,
    read_summary,
    train_and_select,
    update_summary,
    validation_accuracy,
)
from acl_tf.trainers.finetuner import Finetuner

RNG = np.random.default_rng(0)
IMAGES = RNG.uniform(0, 1, (8, 16, 16, 3)).astype(np.float32)
LABELS = RNG.integers(0, 10, 8).astype(np.int64)


def slf_classifier():
    keras.utils.set_random_seed(1)
    classifier = Classifier(ResNet18(width=4), 10, branch="adv", freeze_encoder=True)
    classifier(IMAGES[:2], training=False)
    return classifier


def test_validation_accuracy_clean_matches_predictions():
    model = slf_classifier()
    model.fc.kernel.assign(np.random.default_rng(3).normal(0, 1, model.fc.kernel.shape))
    images = (IMAGES * 255).astype(np.uint8)
    predictions = np.argmax(model(images.astype(np.float32) / 255, training=False), axis=1)
    expected = float(np.mean(predictions == LABELS))
    none = PGDConfig(steps=0, random_start="none")
    result = validation_accuracy(model, images, LABELS, none, batch_size=3)
    assert result == {"acc": pytest.approx(expected), "adv_acc": pytest.approx(expected),
                      "count": 8}
    attack = PGDConfig(steps=3, epsilon=0.3)
    attacked = validation_accuracy(model, images, LABELS, attack, batch_size=8, seed=1)
    again = validation_accuracy(model, images, LABELS, attack, batch_size=8, seed=1)
    assert attacked == again and attacked["acc"] == pytest.approx(expected)
    assert attacked["adv_acc"] <= attacked["acc"]


def test_model_selection_keeps_the_best_epoch(tmp_path):
    model = slf_classifier()
    images = (IMAGES * 255).astype(np.uint8)
    selection = ModelSelection(model, images, LABELS, PGDConfig(steps=1), tmp_path,
                               info={"mode": "slf"})
    for epoch, (acc, adv) in enumerate([(0.5, 0.2), (0.6, 0.4), (0.9, 0.4)], 1):
        selection.pending[epoch] = {"val_acc": acc, "val_adv_acc": adv}
        model.fc.bias.assign(np.full(10, float(epoch), np.float32))
        selection.commit(epoch)
    record = read_metrics(tmp_path)
    assert record["best_epoch"] == 2 and record["select_by"] == "val_adv_acc"  # ties: earlier
    assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3]
    best = keras.saving.load_model(tmp_path / "best.keras", compile=False)
    last = keras.saving.load_model(tmp_path / "last.keras", compile=False)
    assert float(best.fc.bias.numpy()[0]) == 2.0 and float(last.fc.bias.numpy()[0]) == 3.0

    (tmp_path / "clean").mkdir()
    clean = ModelSelection(model, images, LABELS, PGDConfig(steps=1), tmp_path / "clean",
                           select_by="clean")
    for epoch, acc in enumerate([0.5, 0.9], 1):
        clean.pending[epoch] = {"val_acc": acc, "val_adv_acc": 0.0}
        clean.commit(epoch)
    assert read_metrics(tmp_path / "clean")["best_epoch"] == 2
    # An uncommitted finished epoch is measured on catch-up; committed ones are left alone.
    clean.catch_up(2)
    assert len(read_metrics(tmp_path / "clean")["epochs"]) == 2
    clean.catch_up(3)
    entry = read_metrics(tmp_path / "clean")["epochs"][-1]
    assert entry["epoch"] == 3 and 0 <= entry["val_acc"] <= 1


def test_summary_file_and_finished_flag(tmp_path):
    assert read_summary(tmp_path) == {} and not is_finished(tmp_path)
    assert update_summary(tmp_path, a=1, b="x") == {"a": 1, "b": "x"}
    assert update_summary(tmp_path, b="y", c=[1, 2]) == {"a": 1, "b": "y", "c": [1, 2]}
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"a": 1, "b": "y",
                                                                    "c": [1, 2]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]   # no temporary file
    assert not is_finished(tmp_path)
    update_summary(tmp_path, finished=True)
    assert is_finished(tmp_path) and read_metrics(tmp_path)["finished"] is True


def test_train_and_select_fits_selects_and_commits_before_the_callbacks(tmp_path):
    """Two SLF epochs of one step: every epoch is measured (in the history too), committed to
    metrics.json before the caller's callbacks run, and best.keras holds the selected epoch."""
    keras.utils.set_random_seed(1)
    model = Finetuner(Classifier(ResNet18(width=4), 10, freeze_encoder=True), mode="slf")
    model(IMAGES[:2], training=False)
    model.compile(optimizer=SGDL2(0.5, momentum=0.9))
    images = (IMAGES * 255).astype(np.uint8)
    val = ImageData(images=images, labels=LABELS, ids=np.asarray([str(i) for i in range(8)]),
                    num_classes=10)
    seen = []

    class Spy(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append([e["epoch"] for e in read_metrics(tmp_path)["epochs"]])

    def make_dataset(epoch):
        return tf.data.Dataset.from_tensor_slices((IMAGES, LABELS)).batch(8)

    settings = SimpleNamespace(eval_batch_size=4, seed=0, log_every_steps=1, keep_checkpoints=1)
    selection = train_and_select(
        model, make_dataset, val, tmp_path, config=settings, attack=PGDConfig(steps=1),
        epochs=2, steps_per_epoch=1, batch_size=8, select_by="clean", info={"role": "test"},
        callbacks=[Spy()], verbose=0)
    assert seen == [[1], [1, 2]]
    record = read_metrics(tmp_path)
    assert record == selection.record and record["role"] == "test"
    assert [e["epoch"] for e in record["epochs"]] == [1, 2] and record["select_by"] == "val_acc"
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["val_acc"] for h in history] == [e["val_acc"] for e in record["epochs"]]
    # The validation accuracy of best.keras is the recorded one of the best epoch.
    best = selection.load_best()
    assert isinstance(best, Classifier)
    again = validation_accuracy(best, images, LABELS, PGDConfig(steps=1), batch_size=4)
    assert again["acc"] == pytest.approx(record["best"]["val_acc"])
    last = keras.saving.load_model(tmp_path / "last.keras", compile=False)
    np.testing.assert_array_equal(last.fc.kernel.numpy(), model.classifier.fc.kernel.numpy())
