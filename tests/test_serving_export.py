"""Tests of acl_tf.serving.export: SavedModel layout, signatures reloaded in a fresh process, input
checks and ``saved_model_cli``."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from eval_helpers import make_tiny_classifier

from acl_tf.serving.export import (
    BRANCH_SIGNATURES,
    SIGNATURE_BYTES,
    SIGNATURE_DEFAULT,
    ExportError,
    existing_versions,
    export_classifier,
    next_version,
)

# Runs in a fresh Python: loads the SavedModel, runs every signature, records outputs and the
# error messages of bad inputs.
RELOAD_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf

saved_model, inputs, out = sys.argv[1:4]
data = np.load(inputs)
loaded = tf.saved_model.load(saved_model)
results = {"signatures": sorted(loaded.signatures)}
arrays = {}
for name in ("serving_default", "serving_normal", "serving_adv"):
    outputs = loaded.signatures[name](images=tf.constant(data["x"]))
    for key, value in outputs.items():
        arrays[f"{name}/{key}"] = value.numpy()
png = tf.stack([tf.io.encode_png(image) for image in data["u8"]])
outputs = loaded.signatures["serve_image_bytes"](image_bytes=png)
arrays["bytes/logits"] = outputs["logits"].numpy()
arrays["float_of_u8/logits"] = loaded.signatures["serving_default"](
    images=tf.constant(data["u8"].astype(np.float32) / 255.0))["logits"].numpy()
x = data["x"]
bad_float = {"rank": x[0], "size": x[:, :16, :16], "channels": x[..., :1],
             "above": x * 3, "below": x - 1, "nan": x * np.nan, "float64": x.astype(np.float64)}
errors = {}
for key, value in bad_float.items():
    try:
        loaded.signatures["serving_default"](images=tf.constant(value))
        errors[key] = None
    except Exception as err:
        errors[key] = f"{type(err).__name__}: {err}"
bad_bytes = {"bytes_rank": png[0],
             "bytes_size": tf.stack([tf.io.encode_png(np.zeros([16, 16, 3], np.uint8))]),
             "bytes_garbage": tf.constant([b"not an image"])}
for key, value in bad_bytes.items():
    try:
        loaded.signatures["serve_image_bytes"](image_bytes=value)
        errors[key] = None
    except Exception as err:
        errors[key] = f"{type(err).__name__}: {err}"
results["errors"] = errors
np.savez(out + ".npz", **arrays)
with open(out + ".json", "w") as f:
    json.dump(results, f)
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny dual-BN classifier, its export (version 1) and probe inputs with Keras outputs."""
    root = tmp_path_factory.mktemp("export")
    classifier = make_tiny_classifier(seed=0)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(4, 32, 32, 3)).astype(np.float32)
    u8 = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    np.savez(root / "inputs.npz", x=x, u8=u8)
    reference = {b: classifier(x, training=False, branch=b).numpy() for b in ("normal", "adv")}
    path = export_classifier(classifier, root / "saved_model")
    return classifier, Path(path), root, x, u8, reference


@pytest.fixture(scope="module")
def fresh_process(exported):
    """Reloads the export in a fresh process while ``saved_model_cli show --all`` runs beside it."""
    _, path, root, *_ = exported
    cli = Path(sys.executable).with_name("saved_model_cli")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    show = subprocess.Popen([str(cli), "show", "--dir", str(path), "--all"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        reload = subprocess.run([sys.executable, "-c", RELOAD_SCRIPT, str(path),
                                 str(root / "inputs.npz"), str(root / "reloaded")], env=env,
                                capture_output=True, text=True, timeout=300)
        show_out, show_err = show.communicate(timeout=300)
    finally:
        if show.poll() is None:
            show.kill()
    assert reload.returncode == 0, reload.stderr[-3000:]
    assert show.returncode == 0, show_err[-3000:]
    arrays = dict(np.load(root / "reloaded.npz"))
    results = json.loads((root / "reloaded.json").read_text())
    return arrays, results, show_out


def test_layout_versions_and_documentation(exported):
    _, path, root, *_ = exported
    base = root / "saved_model"
    assert path == base / "1" and (path / "saved_model.pb").is_file()
    assert existing_versions(base) == [1] and next_version(base) == 2
    assert [p.name for p in base.iterdir()] == ["1"]              # no temporary directory left
    meta = json.loads((path / "assets.extra" / "signatures.json").read_text())
    assert meta["version"] == 1 and meta["default_branch"] == "adv" and meta["num_classes"] == 10
    assert set(meta["signatures"]) == {SIGNATURE_DEFAULT, SIGNATURE_BYTES, *BRANCH_SIGNATURES.values()}
    assert meta["signatures"]["serving_normal"]["branch"] == "normal"
    markdown = (path / "assets.extra" / "signatures.md").read_text()
    assert "/v1/models/MODEL_NAME:predict" in markdown and '"b64"' in markdown
    with pytest.raises(ExportError, match="already exists"):
        export_classifier(exported[0], base, version=1)
    with pytest.raises(ExportError, match="positive integer"):
        export_classifier(exported[0], base, version=0)
    assert existing_versions(base) == [1]


def test_reloaded_signatures_equal_the_keras_model_per_branch(exported, fresh_process):
    *_, reference = exported
    arrays, results, _ = fresh_process
    assert set(results["signatures"]) == {"serving_default", "serve_image_bytes",
                                          "serving_normal", "serving_adv"}
    # The branches really differ, so the comparisons below can tell them apart.
    assert np.abs(reference["normal"] - reference["adv"]).max() > 1e-2
    for name, branch in [("serving_default", "adv"), ("serving_adv", "adv"),
                         ("serving_normal", "normal")]:
        logits = arrays[f"{name}/logits"]
        np.testing.assert_allclose(logits, reference[branch], atol=1e-5, err_msg=name)
        np.testing.assert_allclose(arrays[f"{name}/probabilities"],
                                   tf.nn.softmax(logits).numpy(), atol=1e-6)
        np.testing.assert_array_equal(arrays[f"{name}/class_ids"], logits.argmax(1))
        assert arrays[f"{name}/class_ids"].dtype == np.int64


def test_bytes_signature_equals_the_float_one(fresh_process):
    arrays, _, _ = fresh_process
    np.testing.assert_allclose(arrays["bytes/logits"], arrays["float_of_u8/logits"], atol=1e-5)


def test_bad_inputs_give_errors_naming_the_problem(fresh_process):
    _, results, _ = fresh_process
    errors = results["errors"]
    expected = {"rank": "wrong rank", "size": "wrong height/width",
                "channels": "wrong channel count", "above": "must lie in [0, 1]",
                "below": "must lie in [0, 1]", "nan": "must lie in [0, 1]",
                "float64": "float", "bytes_rank": "wrong rank",
                "bytes_size": "encoded image must be 32x32", "bytes_garbage": "image"}
    for key, text in expected.items():
        assert errors[key] is not None, f"{key}: no error raised"
        assert text in errors[key], f"{key}: {errors[key][:500]}"
    assert errors["rank"].startswith("InvalidArgumentError")


def test_saved_model_cli_lists_the_signatures(fresh_process):
    _, _, shown = fresh_process
    for name in ("serving_default", "serve_image_bytes", "serving_normal", "serving_adv"):
        assert f"signature_def['{name}']" in shown
    for key in ("inputs['images']", "inputs['image_bytes']", "outputs['logits']",
                "outputs['probabilities']", "outputs['class_ids']"):
        assert key in shown
    assert "DT_STRING" in shown and "DT_INT64" in shown


def test_branch_option_and_next_version(exported):
    classifier, _, root, x, _, reference = exported
    path = export_classifier(classifier, root / "saved_model", branch="normal")
    assert Path(path).name == "2"
    loaded = tf.saved_model.load(path)
    logits = loaded.signatures["serving_default"](images=tf.constant(x))["logits"].numpy()
    np.testing.assert_allclose(logits, reference["normal"], atol=1e-5)
    meta = json.loads((Path(path) / "assets.extra" / "signatures.json").read_text())
    assert meta["default_branch"] == "normal"
    with pytest.raises(ValueError, match="Unknown BN branch"):
        export_classifier(classifier, root / "other", branch="clean")
    assert not (root / "other").exists() or existing_versions(root / "other") == []
