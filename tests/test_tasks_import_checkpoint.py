"""Importing a reference PyTorch checkpoint into a directory (acl_tf.tasks.import_checkpoint) and
its command line: the files written and their use by fine-tuning and evaluation, the checkpoint
wrappers, and the errors. PyTorch is only needed by the test that saves a real .pt file."""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import PROJECT_ROOT, SAMPLE_DIR
from convert_helpers import randomize, resnet_state_dict
from model_helpers import images

from acl_tf.core.errors import CheckpointError, RunDirError
from acl_tf.models import Classifier, ProjectionHead, ResNet18
from acl_tf.models.convert import IMAGENET_MEAN, IMAGENET_STD, StateDictMismatch
from acl_tf.tasks.import_checkpoint import (
    import_state_dict,
    load_torch_checkpoint,
    unwrap_checkpoint,
)
from acl_tf.trainers.pretrainer import ACLPretrainer


@pytest.fixture(scope="module")
def pretraining():
    """(encoder, head, state dict) of an ACL DS pre-training checkpoint, width 4."""
    encoder = ResNet18(width=4, dual_bn=True, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    head = ProjectionHead(16, 16, dual_bn=True)
    head(encoder(images(2)))
    randomize(encoder, 1)
    randomize(head, 2)
    return encoder, head, resnet_state_dict(encoder, multi=True, head=head)


def saved_checkpoint(state):
    """What the reference's train_simCLR.py saves, trained under nn.DataParallel."""
    return {"epoch": 1000, "state_dict": {f"module.{k}": v for k, v in state.items()},
            "optim": {"state": {}, "param_groups": [{"lr": 0.5}]}}


def test_pretraining_checkpoint_gives_encoder_and_pretrainer(pretraining, tmp_path):
    encoder, head, state = pretraining
    out = tmp_path / "imported"
    record = import_state_dict(saved_checkpoint(state), out)
    assert sorted(p.name for p in out.iterdir()) == ["encoder.keras", "imported.json",
                                                    "pretrainer.keras"]
    saved = json.loads((out / "imported.json").read_text())
    assert saved == json.loads(json.dumps(record))
    assert saved["state_dict_entry"] == "state_dict" and saved["entries_not_read"] == ["epoch",
                                                                                     "optim"]
    assert saved["module_prefix_removed"] and saved["format"] == "multi_bn"
    assert saved["arch"] == "resnet18" and saved["width"] == 4 and saved["dual_bn"]
    assert saved["mean"] == pytest.approx(IMAGENET_MEAN)
    assert all(k.endswith("num_batches_tracked") for k in saved["keys_skipped"])

    x = images(4, seed=3)
    loaded = keras.saving.load_model(out / "encoder.keras", compile=False)
    assert isinstance(loaded, ResNet18) and loaded.normalize.std == pytest.approx(IMAGENET_STD)
    pretrainer = keras.saving.load_model(out / "pretrainer.keras", compile=False)
    assert isinstance(pretrainer, ACLPretrainer) and pretrainer.variant == "ds"
    for branch in ("normal", "adv"):
        want = encoder(x, training=False, branch=branch)
        np.testing.assert_allclose(loaded(x, training=False, branch=branch), want, rtol=1e-5,
                                   atol=1e-5)
        np.testing.assert_allclose(pretrainer(x, training=False, branch=branch),
                                   head(want, training=False, branch=branch), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_classifier_checkpoint_gives_best_keras_and_saved_model(tmp_path):
    """A fine-tuned single-BN classifier (train_trades.py saves {'epoch', 'state_dict', ...})."""
    from acl_tf.evaluation.run import load_classifier
    from acl_tf.serving.export import BRANCH_SIGNATURES, SIGNATURE_DEFAULT

    encoder = ResNet18(width=4, dual_bn=False, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    original = Classifier(encoder, 10)
    original(images(2))
    randomize(original, 4)
    original.fc.kernel.assign(np.random.default_rng(0).normal(0, 0.1, (32, 10)).astype("float32"))
    state = resnet_state_dict(encoder, multi=False, fc=original.fc)
    out = tmp_path / "tuned"
    record = import_state_dict({"epoch": 100, "state_dict": state, "best_prec1": 80.0}, out)
    assert record["files"] == ["encoder.keras", "best.keras", "saved_model/1"]
    assert record["num_classes"] == 10 and not record["dual_bn"]
    x = images(4, seed=5)
    want = original(x, training=False)
    model = load_classifier(out)                       # what `acl-tf evaluate --model=DIR` reads
    np.testing.assert_allclose(model(x, training=False), want, rtol=1e-5, atol=1e-5)
    import tensorflow as tf

    served = tf.saved_model.load(str(out / "saved_model" / "1"))
    assert SIGNATURE_DEFAULT in served.signatures
    assert not set(BRANCH_SIGNATURES.values()) & set(served.signatures)   # single BN
    logits = served.signatures[SIGNATURE_DEFAULT](images=tf.constant(x))["logits"]
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)   # (graph rounding)


def test_unwrap_checkpoint():
    state = {"conv1.weight": np.zeros((4, 3, 3, 3), np.float32)}
    assert unwrap_checkpoint(state) == (state, None, [])
    assert unwrap_checkpoint({"model": state, "epoch": 3}) == (state, "model", ["epoch"])
    assert unwrap_checkpoint({"P_state": state, "x": 1}, "P_state") == (state, "P_state", ["x"])
    with pytest.raises(CheckpointError, match="several state dicts"):
        unwrap_checkpoint({"model": state, "state_dict": state})
    with pytest.raises(CheckpointError, match=r"no state dict.*'net'.*--state_dict_key"):
        unwrap_checkpoint({"net": state, "epoch": 3})
    with pytest.raises(CheckpointError, match="no entry 'net'"):
        unwrap_checkpoint({"model": state}, "net")
    with pytest.raises(CheckpointError, match="not a state dict"):
        unwrap_checkpoint([state])


def test_errors_leave_nothing_behind(pretraining, tmp_path):
    _, _, state = pretraining
    broken = {k: v for k, v in state.items() if k != "layer1.0.conv1.weight"}
    broken["fc.fc4.weight"] = np.zeros((4, 4), np.float32)
    with pytest.raises(StateDictMismatch) as info:
        import_state_dict(broken, tmp_path / "x")
    assert info.value.missing == ["layer1.0.conv1.weight"]
    assert info.value.unknown == ["fc.fc4.weight"]
    assert not (tmp_path / "x").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "encoder.keras").write_text("")
    with pytest.raises(RunDirError, match="not an empty directory"):
        import_state_dict(state, tmp_path / "full")


def test_key_prefix_selects_dynacl_key_encoder(pretraining, tmp_path):
    _, _, state = pretraining
    both = {f"encoder_{q}.{k}": v for q in "qk" for k, v in state.items()}
    with pytest.raises(CheckpointError, match="key_prefix"):
        import_state_dict({"state_dict": both}, tmp_path / "a")
    record = import_state_dict({"state_dict": both}, tmp_path / "b", key_prefix="encoder_k.",
                               export=False)
    assert len(record["keys_outside_prefix"]) == len(state)
    assert record["keys_outside_prefix"][0].startswith("encoder_q.")


def test_without_torch_the_error_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)        # import torch -> ImportError
    with pytest.raises(CheckpointError, match=r'pip install "acl-tf\[torch\]"'):
        load_torch_checkpoint(tmp_path / "model.pt")


def test_real_torch_file(pretraining, tmp_path):
    """torch.save of the reference's checkpoint dict (tensors), read back with weights_only."""
    torch = pytest.importorskip("torch")
    from acl_tf.tasks.import_checkpoint import import_checkpoint

    encoder, _, state = pretraining
    checkpoint = saved_checkpoint({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    checkpoint["optim"] = {"state": {0: {"momentum_buffer": torch.zeros(3)}},
                           "param_groups": [{"lr": 0.5, "params": [0]}]}
    path = tmp_path / "model.pt"
    torch.save(checkpoint, path)
    record = import_checkpoint(path, tmp_path / "out")
    assert record["source"]["file"] == str(path) and len(record["source"]["sha256"]) == 64
    loaded = keras.saving.load_model(tmp_path / "out" / "encoder.keras", compile=False)
    x = images(2, seed=6)
    np.testing.assert_allclose(loaded(x, branch="adv"), encoder(x, branch="adv"), rtol=1e-5,
                               atol=1e-5)


# -- the command line ------------------------------------------------------------------------------


def run_cli(*args, env=None, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run([sys.executable, "-m", "acl_tf.import_checkpoint", *args],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_cli_formats_are_the_library_formats():
    from acl_tf.cli import import_checkpoint as cli
    from acl_tf.models import convert

    assert cli.FORMATS == convert.FORMATS


@pytest.mark.e2e
def test_cli_help_and_errors(tmp_path):
    result = run_cli("--help")
    assert result.returncode == 0 and result.stderr == ""
    for flag in ("--checkpoint", "--model_dir", "--format", "--state_dict_key", "--key_prefix",
                 "--bn", "--[no]export"):
        assert f"  {flag}:" in result.stdout
    result = run_cli(f"--model_dir={tmp_path / 'x'}")
    assert result.returncode == 2 and "--checkpoint is required" in result.stderr
    result = run_cli("--checkpoint=a.pt", f"--model_dir={tmp_path / 'x'}", "--format=onnx")
    assert result.returncode == 2 and "multi_bn" in result.stderr
    has_torch = importlib.util.find_spec("torch") is not None
    message = "no such checkpoint file" if has_torch else 'pip install "acl-tf[torch]"'
    result = run_cli(f"--checkpoint={tmp_path / 'none.pt'}", f"--model_dir={tmp_path / 'x'}")
    assert result.returncode == 1 and message in result.stderr
    assert result.stderr.count("error:") == 1 and not (tmp_path / "x").exists()


# -- fine-tuning from an imported encoder ----------------------------------------------------------


@pytest.mark.slow
def test_finetuning_accepts_the_imported_encoder(pretraining, tmp_path):
    """AFF on the adv branch from the imported encoder.keras (run directory given)."""
    from acl_tf.configs import FinetuneConfig, load_config
    from acl_tf.tasks.finetune import run_finetuning

    _, _, state = pretraining
    imported = tmp_path / "imported"
    import_state_dict(saved_checkpoint(state), imported)
    config = load_config(FinetuneConfig, "finetune", "smoke", [
        f"data.source={SAMPLE_DIR}", "mode=aff", "bn=adv", "data.limit=60", "val_size=20",
        "epochs=1", "eval_batch_size=100", "eval_attack.steps=1", "attack.steps=1",
        "evaluate_test=false", "export=false"])
    model, metrics = run_finetuning(config, tmp_path / "aff", pretrained=str(imported), verbose=0)
    assert metrics["finished"] and [e["epoch"] for e in metrics["epochs"]] == [1]
    assert model.classifier.encoder.normalize.mean == pytest.approx(IMAGENET_MEAN)  # imported
    saved = json.loads((tmp_path / "aff" / "config.json").read_text())
    assert saved["model"]["width"] == 4 and saved["model"]["bn"] == "dual"


@pytest.mark.slow
def test_a_state_dict_of_the_reference_classes_imports_finetunes_and_exports(tmp_path):
    """The state dict of the reference's own ``resnet_multi_bn`` ResNet-18 with its projection
    head (keys, shapes and BN buffers as the parity generator recorded them from the reference
    model; the weights regenerated from the fixture's seed, so no torch here) converts, loads,
    fine-tunes one smoke epoch from the adv branch and exports a SavedModel."""
    import parity_helpers as ph

    from acl_tf.configs import FinetuneConfig, load_config
    from acl_tf.tasks.finetune import run_finetuning

    forward = ph.load("forward")
    state = ph.weights_of(forward)
    ph.check_digest(forward, state)
    imported = tmp_path / "imported"
    record = import_state_dict(saved_checkpoint(state), imported)
    assert "multi_bn" in json.dumps(record) and (imported / "pretrainer.keras").exists()
    config = load_config(FinetuneConfig, "finetune", "smoke", [
        f"data.source={SAMPLE_DIR}", "mode=aff", "bn=adv", "data.limit=40", "val_size=20",
        "batch_size=20", "epochs=1", "eval_batch_size=40", "eval_attack.steps=1",
        "attack.steps=1", "test_limit=20", "export=true"])
    model, metrics = run_finetuning(config, tmp_path / "aff", pretrained=str(imported), verbose=0)
    assert metrics["finished"]
    assert model.classifier.encoder.normalize.mean == pytest.approx(IMAGENET_MEAN)
    saved = json.loads((tmp_path / "aff" / "config.json").read_text())
    assert saved["model"]["width"] == 64 and saved["model"]["bn"] == "dual"
    import tensorflow as tf

    served = tf.saved_model.load(str(tmp_path / "aff" / "saved_model" / "1")).signatures[
        "serving_adv"](images=tf.constant(images(2)))["logits"]
    logits = model.classifier(images(2), training=False, branch="adv")
    assert np.abs(np.asarray(logits)).max() > 1e-3  # the zero-initialised fc has moved
    np.testing.assert_allclose(served.numpy(), np.asarray(logits), atol=1e-4)
