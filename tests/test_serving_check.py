"""Tests of ``python -m acl_tf.serving_check`` (acl_tf.serving.check) against the REST stand-in."""

import json
import subprocess
import sys

import numpy as np
import pytest
from serving_helpers import export_tiny_classifier, running_stub

from acl_tf.data import ImageData, load, write_tfrecord


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny classifier exported and served by the stub on 127.0.0.1 (ephemeral port)."""
    root = tmp_path_factory.mktemp("serving")
    classifier, path = export_tiny_classifier(root)
    with running_stub(path) as server:
        yield classifier, path, server, root


def test_serving_check_refuses_the_bytes_signature(served):
    from acl_tf.serving.check import _local_model, predict_url

    _, path, _, _ = served
    with pytest.raises(ValueError, match="float32 image signature"):
        _local_model(path, "serve_image_bytes")
    assert predict_url("http://h:8501/v1/models/acl/") == "http://h:8501/v1/models/acl:predict"
    with pytest.raises(ValueError, match="--url"):
        predict_url("localhost:8501")


def test_serving_check_limit_is_class_balanced(served):
    """--limit on a test file sorted by class (as CIFAR-10's is) checks every class, and the
    report counts them; --subset=first keeps the first N in file order."""
    from acl_tf.serving.check import run_serving_check

    _, path, server, root = served
    sample = load("sample:cifar10", split="test")
    write_tfrecord(root / "sorted" / "test.tfrecord",
                   sample.take(np.argsort(sample.labels, kind="stable")))
    common = dict(steps=1, batch_size=10, limit=10)
    report = run_serving_check(server.url, str(root / "sorted"), str(path), **common)
    assert report["data"]["subset"] == "balanced" and report["data"]["limit"] == 10
    assert report["data"]["class_counts"] == [1] * 10 and report["num_examples"] == 10
    first = run_serving_check(server.url, str(root / "sorted"), str(path), subset="first",
                              **common)
    assert first["data"]["class_counts"] == [10] + [0] * 9


@pytest.mark.slow
@pytest.mark.e2e
def test_serving_check_cli_against_the_stub(served, sample_dir, project_root):
    classifier, path, server, root = served
    # Test images labelled with the model's own predictions: clean accuracy is 1 by
    # construction, so the robust accuracy shows whether the PGD examples really are adversarial.
    sample = load(str(sample_dir), split="test", limit=8)
    predicted = classifier(sample.to_float(), training=False, branch="adv").numpy().argmax(1)
    write_tfrecord(root / "data" / "test.tfrecord",
                   ImageData(sample.images, predicted.astype(np.int64), sample.ids, 10))
    output = root / "check.json"
    cmd = [sys.executable, "-m", "acl_tf.serving_check", f"--url={server.url}",
           f"--data={root / 'data'}", f"--model={path}", "--limit=8", "--pgd_steps=5",
           "--batch_size=4", f"--output={output}"]
    proc = subprocess.run(cmd, cwd=project_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(output.read_text())
    assert json.loads(proc.stdout) == report
    assert report["num_examples"] == 8 and report["requests"] == 4
    assert report["clean_accuracy"] == 1.0 and report["local_clean_accuracy"] == 1.0
    assert report["served_vs_local_agreement"] == {"clean": 1.0, "adversarial": 1.0}
    assert report["robust_accuracy"] == report["local_robust_accuracy"]
    assert report["robust_accuracy"] < 0.5          # PGD at 8/255 breaks a random tiny model
    assert report["attack"]["steps"] == 5
    assert report["attack"]["max_linf_perturbation_255"] == pytest.approx(8, abs=1e-3)

    bad = subprocess.run(cmd[:3] + [f"--url={server.url.replace('/acl', '/missing')}"]
                         + cmd[4:], cwd=project_root, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 1 and bad.stderr.count("HTTP 404") == 1    # a failure at run time
