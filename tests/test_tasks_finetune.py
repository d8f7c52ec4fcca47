"""The fine-tuning run (acl_tf.tasks.finetune): the class-balanced test subset and
run_finetuning's resume after a crash."""

import json
import os

import keras
import numpy as np
import pytest

from acl_tf.configs import ConfigError, FinetuneConfig, load_config
from acl_tf.tasks.selection import read_metrics

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_DIR = os.path.join(PROJECT_ROOT, "acl_tf", "data", "sample", "cifar10")


TINY = ["data.limit=120", "val_size=20", "epochs=2", "eval_batch_size=200", "eval_attack.steps=2"]


def test_test_limit_takes_a_class_balanced_subset(monkeypatch):
    """CIFAR-10's test TFRecord is sorted by class: its first 2,000 images are classes 0-3."""
    from acl_tf import data as data_lib
    from acl_tf.tasks import finetune

    labels = np.repeat(np.arange(10), 30)              # sorted by class, like the file
    images = np.zeros((300, 32, 32, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(300) % 256
    sorted_split = data_lib.ImageData(images=images, labels=labels, ids=np.arange(300).astype(str),
                                      num_classes=10)
    monkeypatch.setattr(finetune, "load_split", lambda config, split, limit=None: sorted_split)
    config = load_config(FinetuneConfig, "finetune", "smoke", ["test_limit=50"])
    test = finetune.load_test_split(config)
    assert len(test) == 50 and np.bincount(test.labels, minlength=10).tolist() == [5] * 10
    assert list(test.labels) == sorted(test.labels)     # file order kept
    again = finetune.load_test_split(config)
    assert np.array_equal(again.ids, test.ids)          # the same images every time
    whole = load_config(FinetuneConfig, "finetune", "smoke", [])
    assert len(finetune.load_test_split(whole)) == 300
    with pytest.raises(ConfigError, match="test_limit must be a positive multiple"):
        load_config(FinetuneConfig, "finetune", "smoke", ["test_limit=55"])


@pytest.mark.slow
def test_resume_after_a_crash(tmp_path):
    """RI + SLF: crash after epoch 1, lose its model selection files, resume to the end."""
    from acl_tf.tasks.finetune import run_finetuning

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("simulated crash")

    config = load_config(FinetuneConfig, "finetune", "smoke", TINY + [
        f"data.source={SAMPLE_DIR}", "mode=slf", "model.width=4", "evaluate_test=false",
        "export=false"])
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_finetuning(config, tmp_path, callbacks=[Crash()], verbose=0)
    first = read_metrics(tmp_path)["epochs"]
    assert [e["epoch"] for e in first] == [1]
    # As if the crash had come between the checkpoint and the model selection files.
    for name in ("metrics.json", "best.keras", "last.keras"):
        (tmp_path / name).unlink()
    from acl_tf.tasks.fit import RunDirError

    with pytest.raises(RunDirError, match="--resume"):
        run_finetuning(config, tmp_path, verbose=0)
    _, metrics = run_finetuning(config, tmp_path, resume=True, verbose=0)
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert metrics["epochs"][0] == first[0]  # re-measured from the restored checkpoint
    assert [h["epoch"] for h in json.loads((tmp_path / "history.json").read_text())] == [1, 2]
    assert (tmp_path / "best.keras").exists() and (tmp_path / "last.keras").exists()
    assert "test" not in metrics and metrics["finished"] and metrics["saved_model"] is None
    assert not (tmp_path / "saved_model").exists()
