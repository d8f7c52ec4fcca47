"""acl_tf.tasks.pretrain (run_pretraining) on the shipped sample: crash and resume, refused
resumes, refused runs that leave no directory, and legacy run directories."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from pretrain_helpers import TINY

from acl_tf.configs import PretrainConfig, load_config
from acl_tf.tasks.fit import RunDirError
from acl_tf.tasks.pretrain import run_pretraining


def tiny_config(variant="ds", epochs=2, overrides=()):
    return load_config(PretrainConfig, "pretrain", "smoke",
                       TINY + [f"variant={variant}", f"epochs={epochs}", *overrides])


class Crash(Exception):
    pass


class CrashAfterEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise Crash(f"simulated crash after epoch {epoch + 1}")


@pytest.mark.slow
def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path):
    """The most stateful run there is: DS as DynACL with the momentum encoder, annealed every
    epoch. A run that crashes after epoch 1 and resumes (so epoch 2 runs with a rebuilt dataset,
    stream weights and key encoder) ends where an uninterrupted one does; the history holds each
    epoch's strength and weights; encoder.keras is the key encoder."""
    config = tiny_config("ds", epochs=2, overrides=[
        "method=dynacl", "dynamic.reload_every=1", "dynamic.momentum_encoder=true",
        "ds_average=true"])
    straight, history = run_pretraining(config, tmp_path / "straight", verbose=0)
    # The crash callback runs after the checkpoint callback: epoch 1 is saved, then it dies.
    with pytest.raises(Crash):
        run_pretraining(config, tmp_path / "crashed", callbacks=[CrashAfterEpoch()], verbose=0)
    assert not (tmp_path / "crashed" / "encoder.keras").exists()
    with pytest.raises(RunDirError, match="--resume"):
        run_pretraining(config, tmp_path / "crashed", verbose=0)
    resumed, resumed_history = run_pretraining(config, tmp_path / "crashed", resume=True,
                                               verbose=0)
    assert [h["epoch"] for h in resumed_history] == [1, 2]
    assert int(resumed.optimizer.iterations.numpy()) == int(straight.optimizer.iterations.numpy())
    for a, b in zip(straight.weights, resumed.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)
    for key in ("aug_strength", "clean_weight", "adv_weight"):
        assert [h[key] for h in resumed_history] == pytest.approx([h[key] for h in history])
    assert [h["aug_strength"] for h in history] == pytest.approx([1, 1 / 2])
    d = [2 / 3 * (1 - s) for s in (1 / 2, 0)]        # weight_lead 1: the next epoch's strength
    assert [h["adv_weight"] for h in history] == pytest.approx([(1 + x) / 2 for x in d])
    assert [h["clean_weight"] for h in history] == pytest.approx([(1 - x) / 2 for x in d])
    encoder = keras.saving.load_model(tmp_path / "straight" / "encoder.keras")
    x = tf.random.stateless_uniform([4, 32, 32, 3], seed=[1, 2])
    np.testing.assert_allclose(encoder(x, training=False),
                               straight.encoder_k(x, training=False), atol=1e-5)


def test_resume_refuses_a_different_config(tmp_path):
    config = tiny_config("s2s", epochs=1)
    run_pretraining(config, tmp_path / "run", verbose=0)
    with pytest.raises(RunDirError, match="config differs"):
        run_pretraining(tiny_config("s2s", epochs=3), tmp_path / "run", resume=True, verbose=0)


@pytest.mark.parametrize("overrides,error", [
    (["data.limit=16"], "batch_size 32 exceeds the 16 training images"),   # config error
    (["data.source=/no/such/dir"], "/no/such/dir"),                        # bad data
])
def test_a_refused_run_leaves_no_directory(tmp_path, overrides, error):
    from acl_tf.core.errors import AclTfError

    config = load_config(PretrainConfig, "pretrain", "smoke", TINY + overrides)
    (tmp_path / "mine.txt").write_text("kept")
    with pytest.raises(AclTfError, match=error):
        run_pretraining(config, tmp_path / "new" / "run", verbose=0)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]
    # In a directory that existed, only what the run added goes.
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "notes.txt").write_text("kept")
    with pytest.raises(AclTfError, match=error):
        run_pretraining(config, tmp_path / "old", verbose=0)
    assert [p.name for p in (tmp_path / "old").iterdir()] == ["notes.txt"]


@pytest.mark.slow
def test_resume_from_a_legacy_run_directory(tmp_path, caplog):
    """A run directory written before the run-directory contract (positional checkpoints, as
    d4476f6's acl_tf/training/loop.py saved them) resumes with a warning naming the layout, in
    the encoder layout it was trained with (layout_version 1: those checkpoints predate 2), which
    the run then records beside its checkpoints."""
    import logging

    import tensorflow as tf

    from acl_tf.core import run_dir as rd
    from acl_tf.optimizers import build_pretrain_optimizer as build_optimizer
    from acl_tf.tasks.fit import prepare_run_dir
    from acl_tf.tasks.pretrain import build_pretrainer

    caplog.set_level(logging.WARNING)
    config = tiny_config("a2a", epochs=2)
    prepare_run_dir(tmp_path, config, resume=False)
    old = build_pretrainer(config)
    old.compile(optimizer=build_optimizer(config.optimizer, config.batch_size, 2, 2))
    old.optimizer.build(old.trainable_variables)
    epoch = tf.Variable(1, dtype=tf.int64, trainable=False, name="epoch")
    checkpoint = tf.train.Checkpoint(weights=list(old.weights),
                                     optimizer_variables=list(old.optimizer.variables),
                                     epoch=epoch)
    tf.train.CheckpointManager(checkpoint, str(tmp_path / "checkpoints"),
                               max_to_keep=3).save(checkpoint_number=1)
    (tmp_path / "history.json").write_text(json.dumps([{"epoch": 1, "loss": 1.0}]))
    model, history = run_pretraining(config, tmp_path, resume=True, verbose=0)
    assert [h["epoch"] for h in history] == [1, 2]
    assert "legacy positional checkpoint layout" in caplog.text
    assert "rebuilt in that layout" in caplog.text
    assert model.encoder.layout_version == 1 and rd.read_encoder_layout(tmp_path) == 1
    assert rd.checkpoint_numbers(tmp_path) == [1, 2]
    # Epoch 2 started from the legacy checkpoint's weights: one epoch of steps on top of them.
    assert int(model.optimizer.iterations.numpy()) == 2


def test_resume_refuses_a_checkpoint_of_another_width(tmp_path):
    from acl_tf.core.errors import CheckpointError

    run_pretraining(tiny_config("s2s", epochs=1), tmp_path / "run", verbose=0)
    # The same config but the saved width edited by hand: the resume check catches it.
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    saved["model"]["width"] = 8
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    wider = load_config(PretrainConfig, "pretrain", str(tmp_path / "run" / "config.json"), [])
    with pytest.raises(CheckpointError, match=r"resnet18/stem_conv/kernel' has shape "
                                              r"\[3, 3, 3, 8\] in the model"):
        run_pretraining(wider, tmp_path / "run", resume=True, verbose=0)


@pytest.mark.slow
def test_the_paper_preset_reads_tfds_cifar10(tmp_path, monkeypatch):
    """What a user without local files gets: the paper preset's data is TFDS ``cifar10``
    (mocked here: no machine of this project can download it), shrunk to seconds."""
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.chdir(tmp_path)
    config = load_config(PretrainConfig, "pretrain", "cifar10_resnet18",
                         TINY + ["epochs=1", "optimizer.reference_batch_size=0",
                                 "optimizer.warmup_epochs=0"])
    assert config.data.source == "cifar10"
    with tfds.testing.mock_data(num_examples=64):
        run_pretraining(config, tmp_path / "run", verbose=0)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
