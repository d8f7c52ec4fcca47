"""End to end: the ``smoke`` pipeline (every component) under LocalDagRunner on the shipped sample.

One pipeline root goes through four runs:

1. ``python -m pipeline.local_runner --config=smoke`` (as the README says): every component runs;
   the pushed SavedModel loads and predicts what the trained classifier predicts.
2. the same pipeline again: every component comes from the cache.
3. with a corrupt test file: the run stops at the evaluator with a message naming the file and
   the record; the training components come from the cache and their artifacts stay.
4. with the test file repaired: the training components still come from the cache; the test data
   is imported and evaluated again and the pusher recognises the model it already serves.
"""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import PROJECT_ROOT, SAMPLE_DIR

pytest.importorskip("tfx.v1")

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

COMPONENTS = ("TrainExampleGen", "TestExampleGen", "Pretrain", "PseudoLabel",
              "AdversarialTrain", "RobustEvaluator", "ServingPusher")
TRAINING = ("TrainExampleGen", "Pretrain", "PseudoLabel", "AdversarialTrain")
MODEL_NAME = "acl_smoke"


def _cli(root, data_dir):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.local_runner", "--config=smoke",
         f"--pipeline_root={root}", f"--set=data.input_base={data_dir}"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=1500)


def _in_process(root, data_dir):
    from pipeline import local_runner

    local_runner.run(local_runner.build("smoke", [f"data.input_base={data_dir}"], root))


def _store(root):
    import ml_metadata as mlmd
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = os.path.join(root, "metadata.sqlite")
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return mlmd.MetadataStore(config)


def _runs(root):
    """One dict per pipeline run, oldest first: component id -> execution state name."""
    from ml_metadata.proto import metadata_store_pb2

    store = _store(root)
    runs = sorted(store.get_contexts_by_type("pipeline_run"), key=lambda c: c.id)
    nodes = {c.id: c.name.split(".", 1)[-1] for c in store.get_contexts_by_type("node")}
    states = []
    for run in runs:
        by_node = {}
        for execution in store.get_executions_by_context(run.id):
            for context in store.get_contexts_by_execution(execution.id):
                if context.id in nodes:
                    by_node[nodes[context.id]] = metadata_store_pb2.Execution.State.Name(
                        execution.last_known_state)
        states.append(by_node)
    return states


def _corrupt_copy(source, target):
    """``source`` rewritten with the label of record 5 out of range (a valid tf.Example)."""
    from acl_tf import data as data_lib

    data = data_lib.load(str(source))
    data.labels[5] = 12
    data_lib.write_tfrecord(str(target), data)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline_root")
    data_dir = tmp_path_factory.mktemp("data")
    for name in ("train.tfrecord", "test.tfrecord"):
        shutil.copy(SAMPLE_DIR / name, data_dir / name)
    result = {"root": root, "data_dir": data_dir}

    first = _cli(root, data_dir)
    assert first.returncode == 0, first.stderr[-4000:]
    result["first_stdout"] = first.stdout
    _in_process(root, data_dir)

    _corrupt_copy(SAMPLE_DIR / "test.tfrecord", data_dir / "test.tfrecord")
    result["failed"] = _cli(root, data_dir)
    shutil.copy(SAMPLE_DIR / "test.tfrecord", data_dir / "test.tfrecord")
    _in_process(root, data_dir)
    result["states"] = _runs(str(root))
    return result


def test_first_run_executes_every_component(runs):
    assert "pipeline acl-tf-smoke finished" in runs["first_stdout"]
    first = runs["states"][0]
    assert {c: first.get(c) for c in COMPONENTS} == {c: "COMPLETE" for c in COMPONENTS}


def test_second_run_comes_from_the_cache(runs):
    second = runs["states"][1]
    assert {c: second.get(c) for c in COMPONENTS} == {c: "CACHED" for c in COMPONENTS}


def test_pushed_model_loads_and_predicts_like_the_trained_classifier(runs):
    import tensorflow as tf

    from acl_tf import data as data_lib
    from acl_tf.evaluation.run import load_classifier

    base = runs["root"] / "serving" / MODEL_NAME
    assert sorted(os.listdir(base)) == ["1"]
    served = tf.saved_model.load(str(base / "1"))
    images = data_lib.load(str(SAMPLE_DIR), "test", limit=8).to_float()
    out = served.signatures["serving_default"](images=tf.constant(images))
    assert out["logits"].shape == (8, 10)
    np.testing.assert_array_equal(out["class_ids"].numpy(), np.argmax(out["logits"], axis=-1))

    trained = sorted((runs["root"] / "AdversarialTrain" / "model").iterdir())
    assert len(trained) == 1                     # trained once, then always from the cache
    classifier = load_classifier(trained[0] / "student")
    expected = classifier(images, training=False).numpy()
    np.testing.assert_allclose(out["logits"].numpy(), expected, rtol=1e-4, atol=1e-5)


def test_corrupt_input_stops_the_run_with_a_clear_message(runs):
    failed = runs["failed"]
    assert failed.returncode == 1
    assert "error: the pipeline stopped in RobustEvaluator: DataError" in failed.stderr
    assert "DataError" in failed.stderr and "label 12 outside [0, 10)" in failed.stderr
    assert "Split-test" in failed.stderr         # names the file
    third = runs["states"][2]
    assert {c: third.get(c) for c in TRAINING} == {c: "CACHED" for c in TRAINING}
    assert third.get("TestExampleGen") == "COMPLETE"
    assert third.get("RobustEvaluator") == "FAILED"
    assert "ServingPusher" not in third
    for component in TRAINING:                   # the earlier artifacts are intact
        outputs = [p for p in (runs["root"] / component).iterdir() if p.name != ".system"]
        assert outputs and all(any(p.iterdir()) for p in outputs)


def test_rerun_after_the_fix_resumes_from_the_cache(runs):
    fourth = runs["states"][3]
    assert {c: fourth.get(c) for c in TRAINING} == {c: "CACHED" for c in TRAINING}
    assert fourth.get("TestExampleGen") == "COMPLETE"
    assert fourth.get("RobustEvaluator") == "COMPLETE"
    assert fourth.get("ServingPusher") == "COMPLETE"
    # The pusher saw the model it already serves: no second version.
    assert sorted(os.listdir(runs["root"] / "serving" / MODEL_NAME)) == ["1"]
