"""``python -m acl_tf.pretrain`` (acl_tf.cli.pretrain) on the shipped sample: the run directory it
writes, and clear errors that leave no half-made directory."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import PROJECT_ROOT
from pretrain_helpers import TINY


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "acl_tf.pretrain", *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.e2e
@pytest.mark.slow
def test_cli_writes_the_run_directory(tmp_path):
    out = tmp_path / "run"
    result = run_cli("--variant=a2s", "--config=smoke", f"--model_dir={out}",
                     *[f"--set={o}" for o in TINY + ["epochs=1"]])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "images/s" in result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["variant"] == "a2s" and config["model"]["width"] == 4
    for name in ("encoder.keras", "pretrainer.keras", "history.json", "training_curves.png"):
        assert (out / name).is_file(), name
    assert list((out / "checkpoints").glob("ckpt-1.index"))
    assert list((out / "logs").rglob("events.out.tfevents*"))
    history = json.loads((out / "history.json").read_text())
    assert history[0]["epoch"] == 1 and np.isfinite(history[0]["loss"])
    encoder = keras.models.load_model(out / "encoder.keras")
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    assert encoder(x, branch="normal").shape == (2, 32)
    assert np.abs(encoder(x, branch="normal") - encoder(x, branch="adv")).max() > 0
    # Starting afresh over finished work is refused, and the refusal removes nothing.
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    again = run_cli("--variant=a2s", "--config=smoke", f"--model_dir={out}")
    assert again.returncode == 2 and "--resume" in again.stderr
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


@pytest.mark.parametrize("args,message,code", [
    (["--variant=simclr"], "value should be one of <s2s|a2a|a2s|ds>", 2),   # usage errors: 2
    (["--set=model.colour=red"], "Unknown config field", 2),
    (["--config=nonexistent"], "Unknown pretrain config 'nonexistent'", 2),
    (["--set=data.source=/no/such/dir"], "/no/such/dir", 1),     # a DataError at run time: 1
])
def test_cli_errors_are_clear(tmp_path, args, message, code):
    result = run_cli("--config=smoke", f"--model_dir={tmp_path / 'run' / 'deep'}", *args)
    assert result.returncode == code
    assert result.stderr.count(message) == 1 and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []   # a refused run leaves no half-made directory
