"""Tests of the TF Serving REST stand-in (acl_tf.serving_stub) and of
``python -m acl_tf.serving_check`` against it."""

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
from eval_helpers import make_tiny_classifier

from acl_tf.data import ImageData, load, write_tfrecord
from acl_tf.serving.export import export_classifier
from acl_tf.serving.stub import start_in_thread

TIMEOUT = 60


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny classifier exported and served by the stub on 127.0.0.1 (ephemeral port)."""
    root = tmp_path_factory.mktemp("serving")
    classifier = make_tiny_classifier(seed=2)
    path = export_classifier(classifier, root / "saved_model")
    server, thread = start_in_thread(root / "saved_model", model_name="acl")
    try:
        yield classifier, path, server, root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert not thread.is_alive()


def post(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_stub_answers_the_tf_serving_formats(served):
    classifier, _, server, _ = served
    x = np.random.default_rng(0).uniform(0, 1, size=(3, 32, 32, 3)).astype(np.float32)
    reference = {b: classifier(x, training=False, branch=b).numpy() for b in ("adv", "normal")}

    status, reply = post(server.url + ":predict", {"instances": x.tolist()})
    assert status == 200 and len(reply["predictions"]) == 3
    assert set(reply["predictions"][0]) == {"logits", "probabilities", "class_ids"}
    logits = np.array([p["logits"] for p in reply["predictions"]])
    np.testing.assert_allclose(logits, reference["adv"], atol=1e-5)
    assert [p["class_ids"] for p in reply["predictions"]] == list(reference["adv"].argmax(1))

    status, reply = post(server.url + "/versions/1:predict",
                         {"signature_name": "serving_normal", "inputs": x.tolist()})
    assert status == 200
    np.testing.assert_allclose(reply["outputs"]["logits"], reference["normal"], atol=1e-5)

    u8 = (x * 255).astype(np.uint8)
    instances = [{"b64": base64.b64encode(tf.io.encode_png(i).numpy()).decode()} for i in u8]
    status, reply = post(server.url + ":predict", {"signature_name": "serve_image_bytes",
                                                    "instances": instances})
    assert status == 200
    expected = classifier(u8.astype(np.float32) / 255, training=False, branch="adv").numpy()
    np.testing.assert_allclose([p["logits"] for p in reply["predictions"]], expected, atol=1e-5)

    with urllib.request.urlopen(server.url, timeout=TIMEOUT) as response:
        assert json.loads(response.read())["model_version_status"][0]["state"] == "AVAILABLE"
    with urllib.request.urlopen(server.url + "/metadata", timeout=TIMEOUT) as response:
        signatures = json.loads(response.read())["metadata"]["signature_def"]
    assert set(signatures) == {"serving_default", "serve_image_bytes", "serving_normal",
                               "serving_adv"}


def test_stub_reports_errors_like_tf_serving(served):
    _, _, server, _ = served
    image = np.full([32, 32, 3], 0.5).tolist()
    status, reply = post(server.url + ":predict", {"instances": [[[0.5, 0.5, 0.5]]]})
    assert status == 400 and "wrong rank" in reply["error"]
    status, reply = post(server.url + ":predict", {"instances": [np.full([32, 32, 3], 2.0)
                                                                 .tolist()]})
    assert status == 400 and "[0, 1]" in reply["error"]
    status, reply = post(server.url + ":predict", {"signature_name": "nope",
                                                    "instances": [image]})
    assert status == 400 and "nope" in reply["error"]
    status, reply = post(server.url.replace("/acl", "/other") + ":predict", {"instances": [image]})
    assert status == 404
    status, reply = post(server.url + ":predict", {"instances": [image], "inputs": [image]})
    assert status == 400 and "exactly one" in reply["error"]
    request = urllib.request.Request(server.url + ":predict", data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=TIMEOUT)
    assert err.value.code == 400


def test_serving_check_refuses_the_bytes_signature(served):
    from acl_tf.serving.check import _local_model, predict_url

    _, path, _, _ = served
    with pytest.raises(ValueError, match="float32 image signature"):
        _local_model(path, "serve_image_bytes")
    assert predict_url("http://h:8501/v1/models/acl/") == "http://h:8501/v1/models/acl:predict"
    with pytest.raises(ValueError, match="--url"):
        predict_url("localhost:8501")


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
           f"--data={root / 'data'}", f"--saved_model={path}", "--limit=8", "--pgd_steps=5",
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
    assert bad.returncode == 2 and "HTTP 404" in bad.stderr
