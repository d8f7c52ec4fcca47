"""One check for every Keras layer and model of acl-tf: config and ``.keras`` save/load round trips.

``assert_round_trip(obj, inputs, tmp_path)`` checks that

* ``from_config(get_config())`` rebuilds an object with the same config;
* ``obj`` saved to a ``.keras`` file loads back (a layer inside a one-layer ``Sequential``) with the
  same config and the same weights, in the same order under the same names;
* the loaded object gives the same outputs on ``inputs`` for every keyword set in ``calls`` (e.g.
  ``[{"branch": "normal"}, {"branch": "adv"}]`` for the dual-BN branches).

It returns the loaded object for further, object-specific checks.
"""

from __future__ import annotations

import json
from typing import Optional, Sequence

import keras
import numpy as np


def save_and_load(obj, tmp_path, name: str = "roundtrip.keras", inputs=None):
    """``obj`` through a ``.keras`` file; a layer travels inside a one-layer ``Sequential`` (built
    on ``inputs``, so that its weights are saved)."""
    path = tmp_path / name
    if isinstance(obj, keras.Model):
        obj.save(path)
        return keras.saving.load_model(path, compile=False)
    wrapper = keras.Sequential([obj])
    if inputs is not None:
        wrapper(inputs)
    wrapper.save(path)
    return keras.saving.load_model(path, compile=False).layers[0]


def _plain(config):
    """A config as JSON would give it back (tuples become lists), for comparison."""
    return json.loads(json.dumps(config, default=repr))


def _outputs(obj, inputs, kwargs):
    out = obj(inputs, training=False, **kwargs)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


def assert_round_trip(obj, inputs, tmp_path, calls: Sequence[dict] = ({},),
                      atol: float = 1e-5, compare_config: bool = True,
                      name: Optional[str] = None):
    if compare_config:
        rebuilt = type(obj).from_config(obj.get_config())
        assert _plain(rebuilt.get_config()) == _plain(obj.get_config()), (
            "from_config(get_config()) changed the config")
    expected = [_outputs(obj, inputs, kw) for kw in calls]
    loaded = save_and_load(obj, tmp_path, name or f"{type(obj).__name__}.keras", inputs)
    assert type(loaded) is type(obj)
    if compare_config:
        assert _plain(loaded.get_config()) == _plain(obj.get_config())
    # Keras names a loaded model's variables without the top-level model's prefix: compare in order.
    assert len(loaded.weights) == len(obj.weights), "the saved file lost or added weights"
    for mine, theirs in zip(obj.weights, loaded.weights):
        assert mine.path.endswith(theirs.path) or theirs.path.endswith(mine.path), (
            f"weight order changed: {mine.path} vs {theirs.path}")
        np.testing.assert_array_equal(np.asarray(theirs), np.asarray(mine), err_msg=mine.path)
    for kw, want in zip(calls, expected):
        got = _outputs(loaded, inputs, kw)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, atol=atol, err_msg=f"outputs differ for {kw}")
    return loaded
