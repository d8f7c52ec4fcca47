"""Pre-training end to end on the shipped sample: CLI outputs, errors, crash and resume."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import PROJECT_ROOT

from acl_tf.configs import PretrainConfig, load_config
from acl_tf.tasks.fit import RunDirError
from acl_tf.tasks.pretrain import run_pretraining

TINY = ["model.width=4", "model.head_dim=16", "data.limit=64", "batch_size=32",
        "attack.steps=1", "log_every_steps=1"]


def tiny_config(variant="ds", epochs=2):
    return load_config(PretrainConfig, "pretrain", "smoke",
                       TINY + [f"variant={variant}", f"epochs={epochs}"])


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
    # Starting afresh over finished work is refused.
    again = run_cli("--variant=a2s", "--config=smoke", f"--model_dir={out}")
    assert again.returncode == 2 and "--resume" in again.stderr


@pytest.mark.parametrize("args,message", [
    (["--variant=simclr"], "Unknown ACL variant 'simclr'"),
    (["--set=model.colour=red"], "Unknown config field"),
    (["--config=nonexistent"], "Unknown pretrain config 'nonexistent'"),
    (["--set=data.source=/no/such/dir"], "/no/such/dir"),
])
def test_cli_errors_are_clear(tmp_path, args, message):
    result = run_cli("--config=smoke", f"--model_dir={tmp_path / 'run'}", *args)
    assert result.returncode == 2
    assert message in result.stderr


class Crash(Exception):
    pass


class CrashAfterEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise Crash(f"simulated crash after epoch {epoch + 1}")


@pytest.mark.slow
def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path):
    config = tiny_config("ds", epochs=2)
    straight, _ = run_pretraining(config, tmp_path / "straight", verbose=0)
    # The crash callback runs after the checkpoint callback: epoch 1 is saved, then it dies.
    with pytest.raises(Crash):
        run_pretraining(config, tmp_path / "crashed", callbacks=[CrashAfterEpoch()], verbose=0)
    assert not (tmp_path / "crashed" / "encoder.keras").exists()
    with pytest.raises(RunDirError, match="--resume"):
        run_pretraining(config, tmp_path / "crashed", verbose=0)
    resumed, history = run_pretraining(config, tmp_path / "crashed", resume=True, verbose=0)
    assert [h["epoch"] for h in history] == [1, 2]
    assert int(resumed.optimizer.iterations.numpy()) == int(straight.optimizer.iterations.numpy())
    for a, b in zip(straight.weights, resumed.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)


def test_resume_refuses_a_different_config(tmp_path):
    config = tiny_config("s2s", epochs=1)
    run_pretraining(config, tmp_path / "run", verbose=0)
    with pytest.raises(RunDirError, match="config differs"):
        run_pretraining(tiny_config("s2s", epochs=3), tmp_path / "run", resume=True, verbose=0)
