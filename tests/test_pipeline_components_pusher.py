"""pipeline/components/pusher.py: versioned, atomic and idempotent copies, and the ServingPusher
pushing only blessed models."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip("tfx.v1")

from pipeline_helpers import artifacts, evaluate_model, make_output  # noqa: E402

from pipeline.components.pusher import ServingPusher, push_saved_model  # noqa: E402


class _Scale(tf.Module):
    def __init__(self, k):
        super().__init__()
        self.k = tf.Variable(k)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def __call__(self, x):
        return x * self.k


def test_push_saved_model_versions_atomically_and_idempotently(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    tf.saved_model.save(_Scale(2.0), a)
    tf.saved_model.save(_Scale(3.0), b)
    base = str(tmp_path / "serving" / "name")
    assert push_saved_model(a, base) == (1, True)
    assert push_saved_model(a, base) == (1, False)      # the same model is not pushed twice
    assert push_saved_model(b, base) == (2, True)
    assert sorted(os.listdir(base)) == ["1", "2"]       # no temporary directories left
    served = tf.saved_model.load(os.path.join(base, "2"))
    np.testing.assert_allclose(served(tf.constant([1.0, 2.0])).numpy(), [3.0, 6.0])


def test_serving_pusher_pushes_only_blessed_models(components_work, components_finetuned, tmp_path):
    serving = tmp_path / "serving"
    _, blessing = evaluate_model(components_work, components_finetuned, tmp_path / "blessed")
    pushed = make_output(artifacts.PushedModel, tmp_path / "pushed")
    ServingPusher.test_call(model=components_finetuned, model_blessing=blessing,
                            pushed_model=pushed,
                            serving_dir=str(serving), model_name="acl")
    assert pushed.get_int_custom_property("pushed") == 1
    assert pushed.get_string_custom_property("pushed_version") == "1"
    served = tf.saved_model.load(str(serving / "acl" / "1"))
    out = served.signatures["serving_default"](
        images=tf.constant(components_work["test_data"].to_float()))
    assert out["logits"].shape == (16, 10) and out["class_ids"].shape == (16,)

    _, refused = evaluate_model(components_work, components_finetuned, tmp_path / "refused",
                                threshold=1.0)
    not_pushed = make_output(artifacts.PushedModel, tmp_path / "not_pushed")
    ServingPusher.test_call(model=components_finetuned, model_blessing=refused,
                            pushed_model=not_pushed,
                            serving_dir=str(tmp_path / "serving2"), model_name="acl")
    assert not_pushed.get_int_custom_property("pushed") == 0
    assert not os.path.exists(tmp_path / "serving2")
    assert json.load(open(os.path.join(not_pushed.uri, "push.json")))["pushed"] is False
