"""pipeline/components/pretrain.py: the Pretrain component writes the dual-BN encoder and reports
corrupt and missing input."""

import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import SAMPLE_DIR

pytest.importorskip("tfx.v1")

from pipeline_helpers import artifacts, make_examples, make_output, tiny_stages  # noqa: E402

from acl_tf import data as data_lib  # noqa: E402
from pipeline import config as pconfig  # noqa: E402
from pipeline.components.pretrain import Pretrain  # noqa: E402


def test_pretrain_writes_the_dual_bn_encoder(components_encoder):
    import keras

    path = os.path.join(components_encoder.uri, "encoder.keras")
    restored = keras.saving.load_model(path, compile=False)
    assert restored.dual_bn
    x = tf.random.uniform([2, 32, 32, 3])
    normal, adv = restored(x, training=False, branch="normal"), restored(x, training=False,
                                                                          branch="adv")
    assert normal.shape == adv.shape
    assert components_encoder.get_string_custom_property("variant") == "ds"
    assert components_encoder.get_string_custom_property("method") == "dynacl_air"
    assert components_encoder.get_int_custom_property("width") == 4
    assert components_encoder.get_int_custom_property("dual_bn") == 1
    assert np.isfinite(components_encoder.get_float_custom_property("train_loss"))
    assert np.isfinite(components_encoder.get_float_custom_property("train_air"))
    assert components_encoder.get_float_custom_property("train_aug_strength") == 1.0


def test_pretrain_reports_corrupt_and_missing_input(components_work, tmp_path):
    train = data_lib.load(str(SAMPLE_DIR), "train", limit=20)
    train.labels[7] = 12
    bad = make_examples(tmp_path / "bad", "train", train)
    config_json = pconfig.config_to_json(tiny_stages("finetune").pretrain)
    with pytest.raises(data_lib.DataError, match=r"data.tfrecord.gz.*label 12 outside \[0, 10\)"):
        Pretrain.test_call(examples=bad, model=make_output(artifacts.Model, tmp_path / "m1"),
                           config_json=config_json)
    with pytest.raises(data_lib.DataError, match="has no split 'train'"):
        Pretrain.test_call(examples=components_work["test"],
                           model=make_output(artifacts.Model, tmp_path / "m2"),
                           config_json=config_json)
