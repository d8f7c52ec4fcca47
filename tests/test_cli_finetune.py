"""The fine-tuning and linear-evaluation command lines (acl_tf.cli.finetune,
acl_tf.cli.linear_eval): an AFF run on a pre-trained encoder and the errors they report."""

import json
import os
import subprocess
import sys

import keras
import pytest
from pretrain_helpers import tiny_pretraining_run

from acl_tf.models import Classifier

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


TINY = ["data.limit=120", "val_size=20", "epochs=2", "eval_batch_size=200", "eval_attack.steps=2"]


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory):
    """A tiny DS pre-training run (width 4) made with run_pretraining."""
    return tiny_pretraining_run(tmp_path_factory.mktemp("pretrained"))


def run_cli(module, *args, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.e2e
def test_cli_aff_smoke_on_pretrained_encoder(pretrained_dir, tmp_path):
    out = tmp_path / "aff"
    result = run_cli("acl_tf.finetune", "--config=smoke", f"--model={pretrained_dir}",
                     "--mode=aff", "--bn=adv", f"--model_dir={out}",
                     *[f"--set={s}" for s in TINY])
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("best.keras", "last.keras", "metrics.json", "history.json", "config.json"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert metrics["mode"] == "aff" and metrics["bn"] == "adv" and metrics["finished"]
    assert metrics["best_epoch"] == max(metrics["epochs"], key=lambda e: e["val_adv_acc"])["epoch"]
    assert 0 <= metrics["test"]["adv_acc"] <= 1 and metrics["test"]["count"] == 200
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["width"] == 4  # from the encoder, not the smoke config's 8
    history = json.loads((out / "history.json").read_text())
    assert {"loss", "acc", "adv_acc", "val_acc", "val_adv_acc"} <= set(history[-1])
    best = keras.saving.load_model(out / "best.keras", compile=False)
    assert isinstance(best, Classifier) and best.branch == "adv" and not best.freeze_encoder
    assert "best epoch" in result.stdout
    exported = metrics["saved_model"]
    assert exported and os.path.isfile(os.path.join(exported, "saved_model.pb"))
    assert os.path.dirname(exported) == str(out / "saved_model")


@pytest.mark.e2e
def test_cli_reports_bad_input(tmp_path):
    result = run_cli("acl_tf.finetune", "--config=smoke", "--mode=full",
                     f"--model_dir={tmp_path / 'x'}")
    assert result.returncode == 2 and "value should be one of <aff|alf|slf>" in result.stderr
    result = run_cli("acl_tf.linear_eval", "--config=smoke", f"--model={tmp_path}/none",
                     f"--model_dir={tmp_path / 'y'}")
    assert result.returncode == 2 and "does not exist" in result.stderr
