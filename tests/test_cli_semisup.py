"""The semi-supervised command line (acl_tf.cli.semisup): the three steps one by one on the
sample, and the errors it reports."""

import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from acl_tf import data as data_lib
from acl_tf.data.pseudo_labels import load_pseudo_labels
from acl_tf.models import ResNet18

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_DIR = os.path.join(PROJECT_ROOT, "acl_tf", "data", "sample", "cifar10")


TINY = ["data.limit=200", "val_size=20", "labels_per_class=3", "label_fraction=null",
        "teacher.epochs=2", "teacher.batch_size=16", "student.batch_size=32",
        "student.attack.steps=1", "eval_attack.steps=2", "eval_batch_size=200"]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    """A width-4 dual-BN encoder saved as a pre-training run would save it."""
    run_dir = tmp_path_factory.mktemp("pretrained")
    encoder = ResNet18(width=4, dual_bn=True)
    encoder(np.zeros((1, 32, 32, 3), np.float32))
    encoder.save(run_dir / "encoder.keras")
    return run_dir


def run_cli(*args, timeout=400):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "acl_tf.semisup", *args], cwd=PROJECT_ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.e2e
def test_cli_steps_one_by_one_on_the_sample(encoder_dir, tmp_path):
    out, encoder = tmp_path / "semi", tmp_path / "encoder"
    shutil.copytree(encoder_dir, encoder)
    common = [f"--model_dir={out}", *[f"--set={s}" for s in TINY]]
    result = run_cli("--config=smoke", f"--model={encoder}", "--step=teacher", *common)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "teacher" / "best.keras").exists() and "teacher test accuracy" in result.stdout
    # Later steps read the saved config (no --config), as the README's commands do; labelling
    # needs the teacher only, not the pre-trained encoder.
    shutil.rmtree(encoder)
    result = run_cli("--step=pseudo_label", f"--model_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    shutil.copytree(encoder_dir, encoder)
    result = run_cli("--step=student", f"--model_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]

    summary = json.loads((out / "metrics.json").read_text())
    for key in ("pseudo_label_accuracy", "teacher_test_accuracy", "student_test_accuracy",
                "student_test_robust_accuracy"):
        assert 0.0 <= summary[key] <= 1.0, key
    assert (summary["num_labelled"], summary["num_validation"], summary["num_unlabelled"]) == (
        30, 20, 150)
    assert summary["pretrained"] == str(encoder) and summary["robust_attack"] == "pgd2"
    pseudo = load_pseudo_labels(out / "pseudo_labels.npz")
    assert len(pseudo) == 200 and pseudo.is_labelled.sum() == 30
    assert summary["pseudo_label_accuracy"] == pytest.approx(pseudo.accuracy())
    teacher = keras.saving.load_model(out / "teacher" / "best.keras", compile=False)
    assert teacher.branch == "normal" and teacher.encoder.width == 4   # from the encoder
    np.testing.assert_allclose(pseudo.logits[:5], teacher(
        data_lib.load(SAMPLE_DIR, limit=5).to_float(), training=False).numpy(), atol=1e-4)
    student = keras.saving.load_model(out / "student" / "best.keras", compile=False)
    assert student.branch == "adv"
    history = json.loads((out / "student" / "history.json").read_text())
    assert {"loss", "ce_labelled", "distill_unlabelled", "robust_kl", "val_adv_acc"} <= set(
        history[-1])
    exported = tf.saved_model.load(summary["student_saved_model"])
    assert {"serving_default", "serving_adv", "serving_normal"} <= set(exported.signatures)


@pytest.mark.e2e
def test_cli_reports_errors(tmp_path):
    result = run_cli("--config=smoke", "--step=pseudo_label", f"--model_dir={tmp_path}")
    assert result.returncode == 2 and "No teacher classifier" in result.stderr
