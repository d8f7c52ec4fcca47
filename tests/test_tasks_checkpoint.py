"""Checkpoints keyed by variable path (acl_tf.tasks.checkpoint): round trip, the check against the
model before a restore, the legacy positional layout, the encoder layout recorded beside the
checkpoints, corrupt files and atomic saves."""

import json
import logging
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from tiny_keras import tiny_model, truncate, weights_of, write_legacy_run

from acl_tf.core import run_dir as rd
from acl_tf.core.errors import CheckpointError, RunDirError
from acl_tf.models import ResNet18
from acl_tf.tasks import checkpoint as ck
from acl_tf.tasks.fit import fit_epochs


@pytest.fixture(autouse=True)
def _absl_to_caplog(caplog):
    caplog.set_level(logging.WARNING)


def saver_for(model, run_dir, keep=3):
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    return ck.ModelCheckpoint(model, epoch, run_dir, keep=keep), epoch


def perturb(model, seed):
    """Sets every model and optimizer variable to fresh random values (a 'trained' state)."""
    model.optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(seed)
    for v in list(model.weights) + list(model.optimizer.variables):
        v.assign(rng.normal(size=v.shape).astype(v.dtype) if v.dtype != "int64"
                 else np.int64(rng.integers(1, 100)))


def all_values(model):
    return weights_of(model) + [v.numpy().copy() for v in model.optimizer.variables]


# -- keys -------------------------------------------------------------------------------------------
def test_escape_matches_tensorflows_keys(tmp_path):
    assert ck.escape("a.b/c") == "a..b.Sc"
    for name in ("a.b/c", "x..S/y.", "plain", "s/./S"):
        assert ck.unescape(ck.escape(name)) == name
    var = tf.Variable(1.0)
    prefix = tf.train.Checkpoint(d={"net/a.b/kernel": var}).write(str(tmp_path / "c"))
    keys = [k for k, _ in tf.train.list_variables(prefix)]
    assert "d/" + ck.escape("net/a.b/kernel") + "/.ATTRIBUTES/VARIABLE_VALUE" in keys


def test_paths_are_relative_to_the_model_and_unique():
    class V:
        def __init__(self, path):
            self.path = path

    got = ck.variable_paths([V("tiny_3/hidden/kernel"), V("SGD/tiny_3_hidden_kernel_momentum"),
                             V("resnet18/conv/kernel"), V("SGD/iteration"),
                             V("tiny_3/hidden/kernel")], "tiny_3")
    assert got == ["hidden/kernel", "SGD/hidden_kernel_momentum", "resnet18/conv/kernel",
                   "SGD/iteration", "hidden/kernel#2"]


def test_keras_numbering_of_an_optimizer_name_is_left_out():
    class LossScaleOptimizer:
        def __init__(self, name, inner):
            self.name, self.inner_optimizer = name, inner

    class SGD:
        def __init__(self, name):
            self.name = name

    assert ck.optimizer_names(SGD("sgd_12")) == {"sgd_12": "sgd"}
    assert ck.optimizer_names(SGD("SGD")) == {"SGD": "SGD"}
    assert ck.optimizer_names(SGD("sgd_l2")) == {"sgd_l2": "sgd_l2"}
    assert ck.optimizer_names(SGD("mine_3")) == {"mine_3": "mine_3"}      # not Keras' numbering
    assert ck.optimizer_names(LossScaleOptimizer("loss_scale_optimizer_2", SGD("sgd_4"))) == {
        "loss_scale_optimizer_2": "loss_scale_optimizer", "sgd_4": "sgd"}

    class V:
        def __init__(self, path):
            self.path = path

    got = ck.variable_paths([V("sgd_3/iteration"), V("sgd_3/tiny_2_hidden_kernel_momentum"),
                             V("lars/iteration")], "tiny_2", {"sgd_3": "sgd"})
    assert got == ["sgd/iteration", "sgd/hidden_kernel_momentum", "lars/iteration"]


# -- round trip -------------------------------------------------------------------------------------
def test_save_and_restore_by_path(tmp_path):
    model = tiny_model()
    saver, epoch = saver_for(model, tmp_path)
    perturb(model, 1)
    epoch.assign(7)
    saver.save(7)
    expected = all_values(model)
    keys = [k for k, _ in tf.train.list_variables(str(rd.checkpoint_prefix(tmp_path, 7)))]
    assert "model_variables/hidden.Skernel/.ATTRIBUTES/VARIABLE_VALUE" in keys
    # Keras up to 3.14 names every SGD "SGD"; 3.15+ "sgd", "sgd_1", ..., keyed "sgd".
    sgd = "SGD" if model.optimizer.name == "SGD" else "sgd"
    assert f"optimizer_state/{sgd}.Shidden_kernel_momentum/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert not list((tmp_path / "checkpoints").glob("*_temp*"))

    other = tiny_model(seed=5)           # another instance: Keras names it tiny_1
    assert other.name != model.name
    saver2, epoch2 = saver_for(other, tmp_path)
    assert saver2.restore_latest(tmp_path) == 7
    assert int(epoch2.numpy()) == 7
    for a, b in zip(expected, all_values(other)):
        np.testing.assert_array_equal(a, b)
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-7")


def test_keep_the_newest_and_state_file(tmp_path):
    model = tiny_model()
    saver, _ = saver_for(model, tmp_path, keep=2)
    for n in (1, 2, 3):
        saver.save(n)
    assert rd.checkpoint_numbers(tmp_path) == [2, 3]
    state = tf.train.get_checkpoint_state(str(tmp_path / "checkpoints"))
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == ["ckpt-2", "ckpt-3"]


# -- the check before a restore ---------------------------------------------------------------------
def test_a_different_shape_names_the_variable_and_both_shapes(tmp_path):
    saver, _ = saver_for(tiny_model(units=4), tmp_path)
    saver.save(1)
    wider = tiny_model(units=6, seed=3)
    before = all_values(wider)
    saver2, _ = saver_for(wider, tmp_path)
    with pytest.raises(CheckpointError) as err:
        saver2.restore_latest(tmp_path)
    message = str(err.value)
    assert "'hidden/kernel'" in message and "[3, 6] in the model" in message
    assert "[3, 4] in the checkpoint" in message and "ckpt-1" in message
    assert isinstance(err.value, RunDirError)
    for a, b in zip(before, all_values(wider)):   # nothing restored
        np.testing.assert_array_equal(a, b)


def test_a_missing_variable_is_named(tmp_path):
    saver, _ = saver_for(tiny_model(), tmp_path)
    saver.save(1)
    saver2, _ = saver_for(tiny_model(head_name="classifier"), tmp_path)
    with pytest.raises(CheckpointError, match=r"variable 'classifier/kernel' \(shape \[4, 1\]\) "
                                              "is not in the checkpoint"):
        saver2.restore_latest(tmp_path)


def test_a_variable_only_in_the_checkpoint_is_named(tmp_path):
    model = tiny_model()
    saver, epoch = saver_for(model, tmp_path)
    extra = tf.Variable(np.zeros((2, 2), np.float32))
    ckpt = tf.train.Checkpoint(
        model_variables={**dict(zip(saver.weight_paths, saver.weights)), "gone/kernel": extra},
        optimizer_state=dict(zip(saver.optimizer_paths, saver.optimizer_variables)),
        epoch=epoch)
    ckpt.write(str(rd.checkpoint_prefix(tmp_path, 1)))
    with pytest.raises(CheckpointError, match=r"checkpoint's variable 'gone/kernel' \(shape "
                                              r"\[2, 2\]\) is not in the model"):
        saver_for(tiny_model(), tmp_path)[0].restore_latest(tmp_path)


def test_a_foreign_checkpoint_is_refused(tmp_path):
    tf.train.Checkpoint(something=tf.Variable(1.0)).write(str(rd.checkpoint_prefix(tmp_path, 1)))
    with pytest.raises(CheckpointError, match="not a checkpoint of this kind"):
        saver_for(tiny_model(), tmp_path)[0].restore_latest(tmp_path)


# -- the legacy positional layout ------------------------------------------------------------------
def test_legacy_checkpoint_restores_when_every_shape_matches(tmp_path, caplog):
    old = tiny_model()
    write_legacy_run(old, tmp_path, epochs=1)
    keys = [k for k, _ in tf.train.list_variables(str(rd.checkpoint_prefix(tmp_path, 1)))]
    assert "weights/0/.ATTRIBUTES/VARIABLE_VALUE" in keys     # the layout the old code wrote
    model = tiny_model(seed=9)
    saver, epoch = saver_for(model, tmp_path)
    assert saver.restore_latest(tmp_path) == 1 and int(epoch.numpy()) == 1
    for a, b in zip(all_values(old), all_values(model)):
        np.testing.assert_array_equal(a, b)
    assert "legacy positional checkpoint layout" in caplog.text and "ckpt-1" in caplog.text


def test_legacy_checkpoint_of_another_model_is_refused(tmp_path):
    write_legacy_run(tiny_model(units=4), tmp_path, epochs=1)
    with pytest.raises(CheckpointError, match=r"legacy positional layout\): model variable 0 has "
                                              r"shape \[3, 4\] .* 'hidden/kernel' has \[3, 5\]"):
        saver_for(tiny_model(units=5), tmp_path)[0].restore_latest(tmp_path)


def test_legacy_checkpoint_with_another_variable_count_is_refused(tmp_path):
    old = tiny_model()
    epoch = tf.Variable(1, dtype=tf.int64)
    tf.train.Checkpoint(weights=list(old.weights)[:-1], optimizer_variables=[],
                        epoch=epoch).write(str(rd.checkpoint_prefix(tmp_path, 1)))
    with pytest.raises(CheckpointError, match="holds 7 model variables, the model has 8"):
        saver_for(tiny_model(), tmp_path)[0].restore_latest(tmp_path)


# -- the encoder layout ----------------------------------------------------------------------------
class WithEncoder(keras.Model):
    """A width-2 single-BN ResNet-18 of layout ``layout_version`` and a Dense head."""

    def __init__(self, layout_version, **kwargs):
        super().__init__(**kwargs)
        self.encoder = ResNet18(width=2, dual_bn=False, layout_version=layout_version)
        self.head = keras.layers.Dense(1, name="head")

    def call(self, x, training=False):
        return self.head(self.encoder(x, training=training))


def encoder_model(layout_version=2, seed=0):
    keras.utils.set_random_seed(seed)
    model = WithEncoder(layout_version)
    model(np.zeros((2, 8, 8, 3), np.float32))
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="mse")
    return model


def images(epoch):
    rng = np.random.default_rng(epoch)
    x = rng.random((16, 8, 8, 3), dtype=np.float32)
    return tf.data.Dataset.from_tensor_slices((x, x.mean(axis=(1, 2, 3))[:, None])).batch(8)


def test_the_encoder_layout_of_a_model():
    assert ck.encoder_layout(encoder_model(2)) == 2
    assert ck.encoder_layout(encoder_model(1)) == 1
    assert ck.encoder_layout(tiny_model()) is None


def test_every_save_records_the_encoder_layout(tmp_path):
    saver_for(encoder_model(), tmp_path)[0].save(1)
    assert json.loads(rd.encoder_layout_file(tmp_path).read_text()) == {"layout_version": 2}
    assert rd.read_encoder_layout(tmp_path) == 2
    saver_for(tiny_model(), tmp_path / "tiny")[0].save(1)       # no encoder, nothing to record
    assert not rd.encoder_layout_file(tmp_path / "tiny").exists()
    assert rd.read_encoder_layout(tmp_path / "tiny") is None


def test_a_checkpoint_of_another_layout_is_refused(tmp_path):
    saver_for(encoder_model(1), tmp_path)[0].save(1)
    with pytest.raises(CheckpointError, match=r"computed with encoder layout_version 1 \(recorded "
                                              r"in .*has layout_version 2.*acl-tf pretrain "
                                              r"--resume rebuilds a layout-1 run in its layout"):
        saver_for(encoder_model(2), tmp_path)[0].restore_latest(tmp_path)
    assert saver_for(encoder_model(1, seed=3), tmp_path)[0].restore_latest(tmp_path) == 1
    saver_for(encoder_model(2), tmp_path / "new")[0].save(1)
    with pytest.raises(CheckpointError, match="layout_version 2 .* has layout_version 1.*same "
                                              "config and encoder file"):
        saver_for(encoder_model(1), tmp_path / "new")[0].restore_latest(tmp_path / "new")


def test_checkpoints_without_a_layout_record_need_one_for_a_layout_2_model(tmp_path):
    old = encoder_model(2)
    saver, epoch = saver_for(old, tmp_path)
    perturb(old, 1)
    epoch.assign(1)
    saver.save(1)
    rd.encoder_layout_file(tmp_path).unlink()      # as an acl-tf without the record left them
    model = encoder_model(2, seed=4)
    with pytest.raises(CheckpointError, match="do not record their encoder layout") as err:
        saver_for(model, tmp_path)[0].restore_latest(tmp_path)
    record = rd.encoder_layout_file(tmp_path)
    assert f'write {{"layout_version": 2}} to {record}' in str(err.value)
    rd.write_encoder_layout(tmp_path, 2)           # what the error tells the user to do
    assert saver_for(model, tmp_path)[0].restore_latest(tmp_path) == 1
    for a, b in zip(all_values(old), all_values(model)):
        np.testing.assert_array_equal(a, b)


def test_checkpoints_without_a_layout_record_resume_into_a_layout_1_model(tmp_path):
    saver_for(encoder_model(1), tmp_path)[0].save(1)
    rd.encoder_layout_file(tmp_path).unlink()
    saver, _ = saver_for(encoder_model(1, seed=2), tmp_path)
    assert saver.restore_latest(tmp_path) == 1
    saver.save(2)
    assert rd.read_encoder_layout(tmp_path) == 1


def test_legacy_positional_checkpoints_are_layout_1(tmp_path):
    old = encoder_model(1)
    old.optimizer.build(old.trainable_variables)
    tf.train.Checkpoint(weights=list(old.weights), optimizer_variables=list(
        old.optimizer.variables), epoch=tf.Variable(1, dtype=tf.int64)).write(
        str(rd.checkpoint_prefix(tmp_path, 1)))
    with pytest.raises(CheckpointError, match="layout_version 1 \\(its legacy positional format "
                                              "is older than layout_version 2\\)"):
        saver_for(encoder_model(2), tmp_path)[0].restore_latest(tmp_path)
    assert saver_for(encoder_model(1, seed=1), tmp_path)[0].restore_latest(tmp_path) == 1


def test_an_unreadable_layout_record_is_an_error(tmp_path):
    saver_for(encoder_model(), tmp_path)[0].save(1)
    rd.encoder_layout_file(tmp_path).write_text('{"layout_version": "2"}')
    with pytest.raises(RunDirError, match="encoder_layout.json cannot be read"):
        saver_for(encoder_model(), tmp_path)[0].restore_latest(tmp_path)


def test_resuming_a_run_older_than_the_layout_record(tmp_path):
    """A small run whose record is deleted (a run directory of an acl-tf that did not write it)
    is not resumed into the layout-2 model; with the layout recorded it resumes and goes on."""
    def fit(model, epochs, resume=False):
        return fit_epochs(model, images, model_dir=tmp_path, epochs=epochs, steps_per_epoch=2,
                          images_per_step=8, verbose=0, resume=resume)

    fit(encoder_model(), 1)
    assert rd.read_encoder_layout(tmp_path) == 2
    rd.encoder_layout_file(tmp_path).unlink()
    with pytest.raises(CheckpointError, match="do not record their encoder layout"):
        fit(encoder_model(seed=1), 2, resume=True)
    assert rd.checkpoint_numbers(tmp_path) == [1]
    rd.write_encoder_layout(tmp_path, 2)
    history = fit(encoder_model(seed=1), 2, resume=True)
    assert [h["epoch"] for h in history] == [1, 2] and rd.checkpoint_numbers(tmp_path) == [1, 2]


# -- corrupt files ----------------------------------------------------------------------------------
def three_checkpoints(run_dir):
    model = tiny_model()
    saver, epoch = saver_for(model, run_dir)
    values = {}
    for n in (1, 2, 3):
        perturb(model, n)
        epoch.assign(n)
        saver.save(n)
        values[n] = all_values(model)
    return values


def test_truncated_data_falls_back_to_the_previous_checkpoint(tmp_path, caplog):
    values = three_checkpoints(tmp_path)
    data = tmp_path / "checkpoints" / "ckpt-3.data-00000-of-00001"
    truncate(data)
    model = tiny_model(seed=4)
    saver, epoch = saver_for(model, tmp_path)
    assert saver.restore_latest(tmp_path) == 2 and int(epoch.numpy()) == 2
    for a, b in zip(values[2], all_values(model)):
        np.testing.assert_array_equal(a, b)
    assert str(data) in caplog.text and "trying the one before" in caplog.text
    # The next save of epoch 3 replaces the bad files.
    saver.save(3)
    assert saver_for(tiny_model(), tmp_path)[0].restore_latest(tmp_path) == 3


def test_garbage_index_falls_back_and_newer_bad_ones_go_on_save(tmp_path, caplog):
    values = three_checkpoints(tmp_path)
    index = tmp_path / "checkpoints" / "ckpt-3.index"
    index.write_bytes(b"not an index" * 20)
    model = tiny_model(seed=4)
    saver, _ = saver_for(model, tmp_path)
    assert saver.restore_latest(tmp_path) == 2
    np.testing.assert_array_equal(values[2][0], model.weights[0].numpy())
    assert str(index) in caplog.text
    saver.save(2)   # as if epoch 2 were saved again: ckpt-3 (past it, bad) goes
    assert rd.checkpoint_numbers(tmp_path) == [1, 2]


def test_no_readable_checkpoint_left_is_an_error_naming_the_files(tmp_path):
    three_checkpoints(tmp_path)
    folder = tmp_path / "checkpoints"
    for n in (1, 2):
        truncate(folder / f"ckpt-{n}.data-00000-of-00001", 0.3)
    (folder / "ckpt-3.index").write_bytes(b"\0" * 10)
    with pytest.raises(CheckpointError) as err:
        saver_for(tiny_model(), tmp_path)[0].restore_latest(tmp_path)
    message = str(err.value)
    for name in ("ckpt-3.index", "ckpt-2.data-00000-of-00001", "ckpt-1.data-00000-of-00001"):
        assert name in message
    assert "No readable checkpoint left" in message


def test_no_checkpoint_at_all_is_a_warning(tmp_path, caplog):
    saver, epoch = saver_for(tiny_model(), tmp_path)
    assert saver.restore_latest(tmp_path) is None and int(epoch.numpy()) == 0
    assert "holds no checkpoint; starting afresh" in caplog.text


# -- atomic saves -----------------------------------------------------------------------------------
def test_a_save_killed_before_its_index_leaves_the_previous_in_force(tmp_path, monkeypatch):
    model = tiny_model()
    saver, epoch = saver_for(model, tmp_path)
    epoch.assign(1)
    saver.save(1)
    first = all_values(model)
    perturb(model, 2)
    real_replace = os.replace

    def killed(src, dst):
        if str(dst).endswith(".index"):
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)

    monkeypatch.setattr(ck.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        saver.save(2)
    monkeypatch.undo()
    folder = tmp_path / "checkpoints"
    assert rd.checkpoint_numbers(tmp_path) == [1]
    assert (folder / "ckpt-2_temp_save").exists()             # what the kill left
    assert (folder / "ckpt-2.data-00000-of-00001").exists()
    assert tf.train.latest_checkpoint(str(folder)).endswith("ckpt-1")
    # The next start cleans up and resumes from checkpoint 1.
    removed = rd.remove_partial_saves(tmp_path)
    assert {p.name for p in removed} == {"ckpt-2_temp_save", "ckpt-2.data-00000-of-00001"}
    model2 = tiny_model(seed=7)
    assert saver_for(model2, tmp_path)[0].restore_latest(tmp_path) == 1
    for a, b in zip(first, all_values(model2)):
        np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in folder.iterdir()) == [
        "checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index"]
