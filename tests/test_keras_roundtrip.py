"""tests/keras_roundtrip.py itself: ``assert_round_trip`` passes a correct layer and fails one whose
config loses an argument, whose config changes on the way, or whose weights do not load."""

import keras
import numpy as np
import pytest
from keras_roundtrip import assert_round_trip


@keras.saving.register_keras_serializable(package="acl_tf_tests")
class Scaled(keras.layers.Layer):
    """``scale * (x @ kernel)``: a layer with one argument, one weight and one call option."""

    def __init__(self, units=3, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.scale = scale

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units),
                                      initializer="random_normal", name="kernel")

    def call(self, inputs, negate=False):
        out = self.scale * keras.ops.matmul(inputs, self.kernel)
        return -out if negate else out

    def get_config(self):
        return {**super().get_config(), "units": self.units, "scale": self.scale}


@keras.saving.register_keras_serializable(package="acl_tf_tests")
class ForgetsScale(Scaled):
    """get_config leaves ``scale`` out: a loaded copy computes with the default 1.0."""

    def get_config(self):
        config = super().get_config()
        del config["scale"]
        return config


@keras.saving.register_keras_serializable(package="acl_tf_tests")
class GrowsUnits(Scaled):
    """__init__ stores a changed value, so from_config(get_config()) drifts."""

    def __init__(self, units=3, **kwargs):
        super().__init__(units=units + 1, **kwargs)


@keras.saving.register_keras_serializable(package="acl_tf_tests")
class SkipsWeights(Scaled):
    """Loads none of its saved variables: a loaded copy keeps fresh random weights."""

    def load_own_variables(self, store):
        pass


def _inputs():
    return np.random.default_rng(0).normal(size=(4, 5)).astype("float32")


def test_a_correct_layer_passes(tmp_path):
    layer = Scaled(units=3, scale=2.5)
    loaded = assert_round_trip(layer, _inputs(), tmp_path, calls=[{}, {"negate": True}])
    assert isinstance(loaded, Scaled) and loaded.scale == 2.5


def test_a_forgotten_argument_fails_on_the_outputs(tmp_path):
    with pytest.raises(AssertionError, match="outputs differ"):
        assert_round_trip(ForgetsScale(scale=2.5), _inputs(), tmp_path)


def test_a_config_that_changes_fails(tmp_path):
    with pytest.raises(AssertionError, match="changed the config"):
        assert_round_trip(GrowsUnits(units=3), _inputs(), tmp_path)


def test_weights_that_do_not_load_fail(tmp_path):
    with pytest.raises(AssertionError, match="kernel"):     # names the weight that differs
        assert_round_trip(SkipsWeights(), _inputs(), tmp_path)
